/** Library entry point: the typed functions the CLI is a thin layer over. */
export * from "./hcloud/schema.js";
export * from "./upload/index.js";
