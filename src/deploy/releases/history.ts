/**
 * Reading and appending release records, whatever the store. Appending takes the next serial (highest in the
 * history, or the channel's, + 1), writes the history object first (exclusively), then replaces the channel object
 * if nobody replaced it meanwhile; a serial or channel taken by a concurrent publish means: read again and retry
 * with the next serial, a bounded number of times.
 */
import { parseRecord, type SignedRecord } from "../record.js";
import { ReleaseError } from "../errors.js";
import { channelKey, releaseKey, type ReleaseStore } from "./store.js";

export interface CurrentRecord {
  record: SignedRecord;
  version: string;
}

function parseOrThrow(text: string, source: string): SignedRecord {
  try {
    return parseRecord(text, source);
  } catch (err) {
    throw new ReleaseError("record", err instanceof Error ? err.message : String(err));
  }
}

/** The channel's current record (parsed, not verified), or undefined when the channel has none yet. */
export async function readCurrent(
  store: ReleaseStore,
  channel: string,
  signal?: AbortSignal,
): Promise<CurrentRecord | undefined> {
  const obj = await store.readChannel(channel, signal);
  if (!obj) return undefined;
  const record = parseOrThrow(obj.text, `${store.description}/${channelKey(channel)}`);
  if (record.channel !== channel)
    throw new ReleaseError(
      "record",
      `${store.description}/${channelKey(channel)} holds a record of channel "${record.channel}"`,
    );
  return { record, version: obj.version };
}

/** One record of the history, or undefined. */
export async function readRelease(
  store: ReleaseStore,
  channel: string,
  serial: number,
  signal?: AbortSignal,
): Promise<SignedRecord | undefined> {
  const text = await store.readRelease(channel, serial, signal);
  if (text === undefined) return undefined;
  const source = `${store.description}/${releaseKey(channel, serial)}`;
  const record = parseOrThrow(text, source);
  if (record.channel !== channel || record.serial !== serial)
    throw new ReleaseError("record", `${source} holds ${record.channel} serial ${record.serial}`);
  return record;
}

/** Serials of the history, newest first. */
export async function historySerials(
  store: ReleaseStore,
  channel: string,
  signal?: AbortSignal,
): Promise<number[]> {
  return (await store.listSerials(channel, signal)).sort((a, b) => b - a);
}

const MAX_ATTEMPTS = 20;

export interface AppendOutcome {
  record: SignedRecord;
  /** Serials other publishes took while this one tried (they stay in the history). */
  lostSerials: number[];
}

/**
 * Appends a record made by `make(serial, current)` and points the channel at it. `make` is called again for each
 * attempt (the serial and the record it replaces may change).
 */
export async function appendRecord(
  store: ReleaseStore,
  channel: string,
  make: (serial: number, current: SignedRecord | undefined) => SignedRecord,
  signal?: AbortSignal,
): Promise<AppendOutcome> {
  return store.withLock(
    channel,
    async () => {
      const lost: number[] = [];
      let floor = 0;
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        signal?.throwIfAborted();
        const current = await readCurrent(store, channel, signal);
        const serials = await store.listSerials(channel, signal);
        const serial = Math.max(floor, current?.record.serial ?? 0, ...serials) + 1;
        const record = make(serial, current?.record);
        const text = `${JSON.stringify(record, null, 2)}\n`;
        if (!(await store.createRelease(channel, serial, text, signal))) {
          lost.push(serial);
          floor = serial;
          continue;
        }
        if (await store.replaceChannel(channel, text, current?.version, signal))
          return { record, lostSerials: lost };
        // The channel moved under us: our history object stays (it never became current); try the next serial.
        lost.push(serial);
        floor = serial;
      }
      throw new ReleaseError(
        "conflict",
        `other publishes to channel ${channel} at ${store.description} kept taking the serial (${MAX_ATTEMPTS} attempts); the channel is unchanged by this one, try again`,
      );
    },
    signal,
  );
}
