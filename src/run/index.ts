/** What every long operation shares: step events, the run context and cleanup, temporary resources, remote scripts. */
export {
  RunError,
  isRunError,
  abortError,
  throwIfAborted,
  CleanupIncompleteError,
  describeLeftovers,
  type Leftover,
} from "./errors.js";
export {
  StepRunner,
  type DataEvent,
  type EventSink,
  type NoteEvent,
  type RunEvent,
  type StepEvent,
  type StepStatus,
  type StepTiming,
} from "./events.js";
export {
  DEFAULT_HEARTBEAT_MS,
  DEFAULT_WAITS,
  RunContext,
  runWithCleanup,
  type RunOptions,
  type RunOutcome,
  type WaitSettings,
} from "./context.js";
export {
  ResourceRegistry,
  registerStragglers,
  serverResource,
  sshKeyResource,
  imageResource,
  type CleanupReport,
  type ImageWait,
  type KnownResources,
  type Registered,
} from "./resources.js";
export {
  HEARTBEAT_LABEL,
  LABEL_PREFIX,
  RUN_LABEL,
  STARTED_LABEL,
  TEMPORARY_LABEL,
  lastSignOfLife,
  newRunId,
  temporaryLabels,
  temporaryName,
} from "./labels.js";
export {
  ConnectionLostError,
  RESULT_PREFIX,
  bashCommand,
  parseResult,
  runScript,
  shellQuote,
  type RunScriptOptions,
} from "./remote.js";
