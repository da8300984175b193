import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { inspect } from "node:util";
import {
  clientFromEnvironment,
  DEFAULT_ENDPOINT,
  HCloudClient,
  HCloudConfigError,
  readCliConfig,
  resolveConfig,
} from "../src/hcloud/index.js";

const dir = mkdtempSync(join(tmpdir(), "hetznix-hcloud-config-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const TOKEN_A = "AAAAtokenForContextAlphaAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const TOKEN_B = "BBBBtokenForContextBetaBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
const ENV_TOKEN = "EEEEtokenFromEnvironmentEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEE";

function writeConfig(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text, { mode: 0o600 });
  return path;
}

const cliToml = writeConfig(
  "cli.toml",
  `active_context = "alpha"

[[contexts]]
name = "alpha"
token = "${TOKEN_A}"

[[contexts]]
name = "beta"
token = "${TOKEN_B}"

[[contexts]]
name = "empty"
`,
);

function expectConfigError(
  fn: () => unknown,
  re: RegExp,
  secrets: string[] = [TOKEN_A, TOKEN_B, ENV_TOKEN],
): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof HCloudConfigError, `expected HCloudConfigError, got ${String(caught)}`);
  assert.match(caught.message, re);
  for (const s of secrets) {
    for (const text of [caught.message, caught.stack ?? "", JSON.stringify(caught), inspect(caught)])
      assert.ok(!text.includes(s), "secret leaked into the error");
  }
}

describe("resolveConfig", () => {
  it("prefers an explicit token and endpoint", () => {
    const c = resolveConfig({
      token: "opt",
      endpoint: "http://127.0.0.1:1/v1/",
      env: { HCLOUD_TOKEN: ENV_TOKEN, HCLOUD_ENDPOINT: "http://127.0.0.2/v1", HCLOUD_CONFIG: cliToml },
    });
    assert.equal(c.token, "opt");
    assert.equal(c.tokenSource, "option");
    assert.equal(c.endpoint, "http://127.0.0.1:1/v1");
  });

  it("reads HCLOUD_TOKEN and HCLOUD_ENDPOINT before the config file", () => {
    const c = resolveConfig({
      env: { HCLOUD_TOKEN: ENV_TOKEN, HCLOUD_ENDPOINT: "http://127.0.0.2/v1", HCLOUD_CONFIG: cliToml },
    });
    assert.equal(c.token, ENV_TOKEN);
    assert.equal(c.tokenSource, "HCLOUD_TOKEN");
    assert.equal(c.endpoint, "http://127.0.0.2/v1");
  });

  it("uses the active context of the CLI config, with the default endpoint", () => {
    const c = resolveConfig({ env: { HCLOUD_CONFIG: cliToml } });
    assert.equal(c.token, TOKEN_A);
    assert.equal(c.endpoint, DEFAULT_ENDPOINT);
    assert.match(c.tokenSource, /context "alpha"/);
  });

  it("lets HCLOUD_CONTEXT pick another context, and the context option win over it", () => {
    assert.equal(resolveConfig({ env: { HCLOUD_CONFIG: cliToml, HCLOUD_CONTEXT: "beta" } }).token, TOKEN_B);
    assert.equal(
      resolveConfig({ context: "alpha", env: { HCLOUD_CONFIG: cliToml, HCLOUD_CONTEXT: "beta" } }).token,
      TOKEN_A,
    );
  });

  it("finds cli.toml under XDG_CONFIG_HOME/hcloud and under HOME/.config/hcloud", () => {
    mkdirSync(join(dir, "xdg", "hcloud"), { recursive: true });
    copyFileSync(cliToml, join(dir, "xdg", "hcloud", "cli.toml"));
    assert.equal(resolveConfig({ env: { XDG_CONFIG_HOME: join(dir, "xdg") } }).token, TOKEN_A);
    mkdirSync(join(dir, "home", ".config", "hcloud"), { recursive: true });
    copyFileSync(cliToml, join(dir, "home", ".config", "hcloud", "cli.toml"));
    assert.equal(resolveConfig({ env: { HOME: join(dir, "home"), HCLOUD_CONTEXT: "beta" } }).token, TOKEN_B);
  });

  it("keeps the token out of JSON and inspect output of the resolved config", () => {
    const c = resolveConfig({ env: { HCLOUD_CONFIG: cliToml } });
    assert.ok(!JSON.stringify(c).includes(TOKEN_A));
    assert.ok(!inspect(c).includes(TOKEN_A));
    const file = readCliConfig(cliToml);
    assert.deepEqual(
      file?.contexts.map((x) => x.name),
      ["alpha", "beta", "empty"],
    );
    assert.ok(!JSON.stringify(file).includes(TOKEN_B));
  });

  it("names the fix when there is no token anywhere", () => {
    expectConfigError(
      () => resolveConfig({ env: { HCLOUD_CONFIG: join(dir, "missing.toml") } }),
      /HCLOUD_TOKEN/,
    );
    expectConfigError(
      () => resolveConfig({ env: { HCLOUD_CONFIG: join(dir, "missing.toml") } }),
      /hcloud context create/,
    );
    const noActive = writeConfig("noactive.toml", `[[contexts]]\nname = "x"\ntoken = "${TOKEN_B}"\n`);
    expectConfigError(() => resolveConfig({ env: { HCLOUD_CONFIG: noActive } }), /HCLOUD_TOKEN/);
    expectConfigError(
      () => resolveConfig({ env: { HCLOUD_TOKEN: "", HCLOUD_CONFIG: noActive } }),
      /HCLOUD_TOKEN/,
    );
  });

  it("lists the context names (not tokens) when the wanted context does not exist", () => {
    expectConfigError(
      () => resolveConfig({ env: { HCLOUD_CONFIG: cliToml, HCLOUD_CONTEXT: "gamma" } }),
      /No context "gamma".*alpha, beta, empty/,
    );
    expectConfigError(
      () => resolveConfig({ env: { HCLOUD_CONFIG: cliToml, HCLOUD_CONTEXT: "empty" } }),
      /"empty".*has no token/,
    );
  });

  it("reports a broken config file by line, without quoting it", () => {
    const broken = writeConfig(
      "broken.toml",
      `active_context = "a"\n[[contexts]]\nname = "a"\ntoken = "${TOKEN_A}\n`,
    );
    expectConfigError(() => resolveConfig({ env: { HCLOUD_CONFIG: broken } }), /Cannot parse .*broken\.toml/);
  });
});

describe("clients from configuration", () => {
  it("clientFromEnvironment takes endpoint and token from the environment", () => {
    const c = clientFromEnvironment({
      env: { HCLOUD_TOKEN: ENV_TOKEN, HCLOUD_ENDPOINT: "http://127.0.0.1:9/v1/" },
    });
    assert.equal(c.endpoint, "http://127.0.0.1:9/v1");
    assert.ok(!inspect(c, { showHidden: true, depth: 10 }).includes(ENV_TOKEN));
    assert.ok(!JSON.stringify(c).includes(ENV_TOKEN));
  });

  it("clientFromEnvironment fails with the fix when there is no token", () => {
    expectConfigError(
      () => clientFromEnvironment({ env: { HCLOUD_CONFIG: join(dir, "none.toml") } }),
      /HCLOUD_TOKEN/,
    );
  });

  it("the constructor refuses an empty token", () => {
    assert.throws(() => new HCloudClient({ token: "" }), HCloudConfigError);
  });
});
