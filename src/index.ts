/**
 * Library entry point: the typed functions the CLI is a thin layer over. The emulator, the metadata agent and the
 * SSH helpers have their own entry points: `hetznix/emulator`, `hetznix/metadata`, `hetznix/ssh`.
 */
export * from "./hcloud/index.js";
export * from "./upload/index.js";
