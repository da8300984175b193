/** What went wrong, as a code callers can branch on; the message is written for the person at the console. */
export type MetadataErrorCode =
  | "unreachable" // the metadata service did not answer within the timeout
  | "http_status" // it answered with a status the agent cannot use
  | "malformed" // the document is not valid YAML or does not have Hetzner's shape
  | "too_large" // a document is larger than any metadata document (MAX_DOCUMENT_BYTES)
  | "link_setup" // bringing a link up for the fetch failed
  | "write" // writing or removing a file failed
  | "usage"; // an option given to the agent is invalid

export class MetadataError extends Error {
  override readonly name = "MetadataError";
  constructor(
    readonly code: MetadataErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
