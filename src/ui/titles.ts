/** Titles of each operation's steps, as the progress display shows them. */

/** Titles of apply's steps on a terminal. */
export const APPLY_TITLES: Record<string, string> = {
  lock: "take the apply lock",
  resolve: "resolve the channel",
  admit: "check the release",
  fetch: "fetch the closure",
  check: "check the system",
  activate: "activate",
  health: "health checks",
  confirm: "wait for confirmation",
  commit: "make it the boot default",
  "dry-activate": "dry-activate",
  record: "record",
  rollback: "roll back",
};

/** Deploy: apply's steps on each server, plus the deployer's own. */
export const DEPLOY_TITLES: Record<string, string> = {
  ...APPLY_TITLES,
  connect: "connect over SSH",
  reconnect: "confirm (new connection)",
};
