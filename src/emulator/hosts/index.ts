/**
 * The real-machine side of the emulator: sparse disk files, and hosts (a real OpenSSH sshd per running server, in
 * its own namespaces and root, behind a byte-counting TCP proxy on <ip>:22): the rescue system, the server's own
 * NixOS-like disk, or a plain system image.
 */
export type { DiskStore, Host, HostKind, HostManager, HostSpec } from "./types.js";
export type { HostManagerOptions, RealHostManager, StartedHost, SweepResult } from "./manager.js";
export { createDiskStore } from "./disks.js";
export { createHostManager, sweep } from "./manager.js";
export { probeDisk, type DiskContents, type PartitionInfo } from "./probe.js";
export { hetznixPackage } from "./package.js";
