# The hetznix CLI (and the metadata agent, `hetznix metadata apply`), built from this repository's lockfile.
{
  lib,
  buildNpmPackage,
  nodejs_20,
}:

buildNpmPackage {
  pname = "hetznix";
  version = (lib.importJSON ../package.json).version;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../package.json
      ../package-lock.json
      ../tsconfig.json
      ../tsconfig.build.json
      ../src
    ];
  };

  nodejs = nodejs_20;

  # The hash of the npm dependencies fetched from package-lock.json. It cannot be computed on the machines this
  # repository is developed on (no working Nix store there), so this is a placeholder: the first
  # `nix build .#hetznix` fails and prints the real hash ("got: sha256-..."); put that here.
  npmDepsHash = lib.fakeHash;

  # `npm run build` (tsc -p tsconfig.build.json) writes dist/; the install step keeps `files` from package.json
  # and links `bin.hetznix`.
  npmBuildScript = "build";

  # Skip dependencies' install scripts: the only ones are optional native speed-ups of ssh2 (cpu-features and
  # its crypto binding), which fall back to JavaScript, so the build needs no compiler or Python.
  npmRebuildFlags = [ "--ignore-scripts" ];
  # `npm pack` (used to pick the installed files) would otherwise run `prepare` (tsc) a second time.
  npmPackFlags = [ "--ignore-scripts" ];

  meta = {
    description = "NixOS on Hetzner Cloud: image upload, deploys, and the boot-time metadata agent";
    license = lib.licenses.mit;
    mainProgram = "hetznix";
    platforms = lib.platforms.linux ++ lib.platforms.darwin;
  };
}
