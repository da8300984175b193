/**
 * The real-machine side of the emulator: sparse disk files and rescue hosts (a real OpenSSH sshd per server, in its
 * own mount + pid namespace where /dev/sda is the server's disk, behind a byte-counting TCP proxy on <ip>:22).
 */
export type { DiskStore, RescueHost, RescueHostManager, RescueHostSpec } from "./types.js";
export type {
  ExtendedRescueHostManager,
  RescueHostManagerOptions,
  StartedRescueHost,
  SweepResult,
} from "./manager.js";
export { createDiskStore } from "./disks.js";
export { createRescueHostManager, sweep } from "./manager.js";
