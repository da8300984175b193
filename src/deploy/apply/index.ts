/** The on-server side of deploy: `hetznix apply` (fetch a signed release, activate detached, roll back on failure). */
export {
  applyRelease,
  confirmApply,
  confirmScript,
  ApplyDetachedError,
  ApplyUsageError,
  type ApplyOptions,
} from "./front.js";
export {
  runWorker,
  newNonce,
  type ApplyRequest,
  type ApplyResult,
  type ApplyStep,
  type WorkerEvent,
} from "./worker.js";
export {
  APPLY_ACTIONS,
  APPLY_EXIT,
  admit,
  stepsFor,
  switchOutcome,
  type Admission,
  type ApplyAction,
  type ApplyStatus,
  type HostFacts,
  type SwitchOutcome,
} from "./plan.js";
export { DEFAULT_PATHS, type ApplyPaths } from "./host.js";
