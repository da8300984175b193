/**
 * In-process entry point of the Hetzner Cloud API emulator.
 *
 * - `state/`: resources and their rules, moto-style (store, scheduler, one module per resource; no HTTP);
 * - `http/`: node:http server, routing, parsing, rendering, auth, rate limit headers;
 * - `hosts/`: disks and hosts (rescue, system and plain hosts: a real sshd per running server);
 * - `metadata.ts` (metadata documents), `faults.ts` (failing calls, capacity, SSH drops).
 *
 * One listener serves:
 * - `/v1/...`: the API (bearer token; see README.md in this folder for what is modelled);
 * - `/metadata/{server_id}/hetzner/v1/metadata[/...]` and `.../userdata`: each server's metadata service, without
 *   authentication (what the server would see at http://169.254.169.254/hetzner/v1/);
 * - `/_emulator/state` (GET), `/_emulator/faults` (GET, POST, DELETE) and `/_emulator/faults/{id}` (DELETE): admin,
 *   with the same bearer token.
 */
export type { CapacityFault, Fault, FaultSpec, SshDropFault } from "./faults.js";

export type { EmulatorOptions, Exchange, RunningEmulator } from "./types.js";
export { startEmulator } from "./server.js";
export { parseFault, FaultSyntaxError } from "./faults.js";
export { EmulatorState, StateDirInUseError } from "./state/index.js";
