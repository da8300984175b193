export { generateKeyPair, fingerprintOf, type SshKeyPair } from "./keys.js";
export {
  connect,
  SshConnectError,
  HostKeyMismatchError,
  type ConnectAttempt,
  type ConnectOptions,
  type SshConnection,
} from "./connect.js";
export {
  exec,
  execOrThrow,
  ExecError,
  type ExecErrorKind,
  type ExecOptions,
  type ExecProgress,
  type ExecResult,
} from "./exec.js";
