/**
 * How long things take on Hetzner Cloud, at speed 1. Every figure is divided by the emulator's `speed`.
 *
 * Sources and reasoning (no public SLA exists; these are typical observed values):
 * - create_server: Hetzner advertises servers "ready in seconds"; the create_server action of a server from a
 *   system image usually finishes in 10-20 s, then start_server in a few seconds. We use 12 s + 4 s.
 * - From a snapshot: "creating a server from a snapshot takes a minute or two and grows with snapshot size"
 *   (hetzner-facts.md, timings users report). We use 45 s + 8 s per GB of the snapshot's image_size.
 * - poweron / reset: a few seconds for the hypervisor to start the VM (4 s / 3 s). reboot (ACPI) lets the guest
 *   shut down first (8 s).
 * - poweroff (hard): 2 s. shutdown (ACPI): the action only delivers the request (1 s); the guest then takes its time
 *   to power off, about 10 s for a stock distribution (facts: "the action succeeding does not mean the server is
 *   off").
 * - enable_rescue / disable_rescue / change_protection: bookkeeping, about 1-2 s.
 * - create_image: proportional to the data to copy and compress; about 20 s + 10 s per GB allocated, in line with
 *   hcloud-upload-image users seeing a few minutes for a few GB end to end.
 * - delete: 4 s.
 * - rebuild: the disk is replaced like at create (12 s from a system image; from a snapshot the per-GB time of a
 *   create from it), then the server boots if it was running.
 * - enable/disable_backup, change_dns_ptr, primary IP assign/unassign, firewall rules and applications, network
 *   changes: bookkeeping, 1-2 s.
 * - volumes: create 3 s (plus formatting), attach/detach/resize 2 s.
 */
export const LATENCY_MS = {
  createServer: 12_000,
  createServerFromSnapshotBase: 45_000,
  createServerFromSnapshotPerGb: 8_000,
  startServer: 4_000,
  poweron: 4_000,
  reset: 3_000,
  reboot: 8_000,
  poweroff: 2_000,
  shutdownRequest: 1_000,
  guestShutdown: 10_000,
  enableRescue: 2_000,
  disableRescue: 1_000,
  changeProtection: 1_000,
  createImageBase: 20_000,
  createImagePerGb: 10_000,
  deleteServer: 4_000,
  rebuild: 12_000,
  backup: 1_000,
  firewallApply: 1_000,
  networkChange: 2_000,
  createVolume: 3_000,
  attachVolume: 2_000,
} as const;

export type LatencyName = keyof typeof LATENCY_MS;
