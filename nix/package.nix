# The hetznix CLI (and the metadata agent, `hetznix metadata apply`), built from this repository's lockfile.
#
# package-lock.json has no `resolved` URLs (and must not get any: no registry host is written into this
# repository), so nixpkgs' npm fetchers, which only fetch lockfile entries that have one, cannot be used. Instead
# a fixed-output derivation runs ./npm-deps.sh, which installs the lockfile's packages with `npm ci` from npm's
# default registry. Its outputHash below is checked by test/nix-npm-deps.test.ts, which runs the same script and
# fails, printing the new hash, when the lockfile changes and this hash does not follow.
{
  lib,
  stdenv,
  stdenvNoCC,
  nodejs_22,
  cacert,
  makeWrapper,
}:

let
  nodejs = nodejs_22;
  packageJSON = lib.importJSON ../package.json;

  # The NAR hash of ./npm-deps.sh's output for the current package-lock.json.
  npmDepsHash = "sha256-a7m0oCAG9lOKj53XePc1jx1IYp11GagNkpYnua3zFUY=";

  npmDeps = stdenvNoCC.mkDerivation {
    # The lockfile's own hash is part of the name, so a changed lockfile never reuses an older download from the
    # store: it is fetched again and checked against npmDepsHash.
    name = "hetznix-npm-deps-${builtins.substring 0 16 (builtins.hashFile "sha256" ../package-lock.json)}";

    src = lib.fileset.toSource {
      root = ../.;
      fileset = lib.fileset.unions [
        ../package.json
        ../package-lock.json
      ];
    };

    nativeBuildInputs = [ nodejs ];

    # nixpkgs' Node.js uses OpenSSL's CA store, which the build environment points at no file by default.
    SSL_CERT_FILE = "${cacert}/etc/ssl/certs/ca-bundle.crt";
    NODE_EXTRA_CA_CERTS = "${cacert}/etc/ssl/certs/ca-bundle.crt";
    impureEnvVars = lib.fetchers.proxyImpureEnvVars;

    buildCommand = ''
      export HOME=$TMPDIR
      ${stdenvNoCC.shell} ${./npm-deps.sh} "$src" "$out"
    '';

    outputHashMode = "recursive";
    outputHash = npmDepsHash;
  };
in
stdenv.mkDerivation {
  pname = "hetznix";
  inherit (packageJSON) version;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../package.json
      ../tsconfig.json
      ../tsconfig.build.json
      ../src
    ];
  };

  nativeBuildInputs = [
    nodejs
    makeWrapper
  ];
  # So that fixup patches the `#!/usr/bin/env node` lines of the installed dependencies to this Node.js.
  buildInputs = [ nodejs ];

  # `npm run build`, without npm: tsc with the dev dependencies (TypeScript, the @types packages).
  buildPhase = ''
    runHook preBuild
    ln -s ${npmDeps}/build/node_modules node_modules
    node node_modules/typescript/bin/tsc -p tsconfig.build.json
    runHook postBuild
  '';

  # The built CLI with the runtime dependencies only, laid out as `npm install --global` would.
  installPhase = ''
    runHook preInstall
    dir=$out/lib/node_modules/hetznix
    mkdir -p "$dir" "$out/bin"
    cp -r package.json dist "$dir/"
    cp -r ${npmDeps}/runtime/node_modules "$dir/node_modules"
    chmod -R u+w "$dir/node_modules"
    makeWrapper ${nodejs}/bin/node "$out/bin/hetznix" --add-flags "$dir/dist/cli/main.js"
    runHook postInstall
  '';

  # The dev dependencies (TypeScript, linters) are copied from, never referenced: the closure stays small.
  disallowedReferences = [ npmDeps ];

  passthru = { inherit npmDeps; };

  meta = {
    description = "NixOS on Hetzner Cloud: image upload, deploys, and the boot-time metadata agent";
    license = lib.licenses.mit;
    mainProgram = "hetznix";
    platforms = lib.platforms.linux ++ lib.platforms.darwin;
  };
}
