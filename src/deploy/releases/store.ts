/**
 * Where release records live (a directory served over HTTP(S), or an S3-compatible bucket):
 *
 *   channels/CHANNEL.json          the channel's current signed record: what hosts fetch (one object)
 *   releases/CHANNEL/SERIAL.json   every record ever written, never changed (the history)
 *
 * A store offers the few primitives publishing needs: an exclusive create for history objects, a compare-and-replace
 * for the channel object, and (directories) a lock that serialises publishers of one channel.
 */

export interface ChannelObject {
  text: string;
  /** Changes whenever the object does (a content hash, or the S3 ETag). */
  version: string;
}

export interface ReleaseStore {
  /** The location as given (without credentials), for messages. */
  readonly description: string;
  /** How history objects are created exclusively, said in results (e.g. "conditional PUT", "check-then-put"). */
  readonly exclusiveCreate: string;
  listChannels(signal?: AbortSignal): Promise<string[]>;
  readChannel(channel: string, signal?: AbortSignal): Promise<ChannelObject | undefined>;
  /** Serials present in the history of `channel`, unsorted. */
  listSerials(channel: string, signal?: AbortSignal): Promise<number[]>;
  readRelease(channel: string, serial: number, signal?: AbortSignal): Promise<string | undefined>;
  /** Writes releases/CHANNEL/SERIAL.json unless it exists; false when it does (another publish took the serial). */
  createRelease(channel: string, serial: number, text: string, signal?: AbortSignal): Promise<boolean>;
  /** Replaces channels/CHANNEL.json if its version is still `expected` (undefined: absent); false otherwise. */
  replaceChannel(
    channel: string,
    text: string,
    expected: string | undefined,
    signal?: AbortSignal,
  ): Promise<boolean>;
  /** Runs `fn` while holding the channel's publish lock, where the store has one; else just runs it. */
  withLock<T>(channel: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T>;
  close(): void;
}

export function channelKey(channel: string): string {
  return `channels/${channel}.json`;
}

export function releaseKey(channel: string, serial: number): string {
  return `releases/${channel}/${serial}.json`;
}

/** The serial of a history object's name (`12.json`), or undefined. */
export function serialOfName(name: string): number | undefined {
  const m = /^([1-9][0-9]{0,14})\.json$/.exec(name);
  return m ? Number(m[1]) : undefined;
}
