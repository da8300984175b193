/** The fleet side of deploy: `hetznix deploy` rolls a channel's release out to servers found by labels or names. */
export {
  deployFleet,
  DeployError,
  type DeployOptions,
  type DeployResult,
  type ServerReport,
} from "./rollout.js";
export {
  FAILED_OUTCOMES,
  budgetExceeded,
  fleetExitCode,
  isFailure,
  outcomeOf,
  selectServers,
  splitCanaries,
  type FleetServer,
  type Selection,
  type ServerOutcome,
} from "./plan.js";
export { DeployMemory, KnownHosts, stateDir, type KnownHost, type Remembered } from "./memory.js";
