{
  description = "hetznix: NixOS on Hetzner Cloud (disk images, the boot-time metadata agent, the hetznix CLI)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      lib = nixpkgs.lib;
      imageSystems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      cliSystems = imageSystems ++ [
        "aarch64-darwin"
        "x86_64-darwin"
      ];
      forAll = systems: f: lib.genAttrs systems f;

      # A NixOS system for a Hetzner server. `modules` adds your own configuration; `diskSize` ("auto" or MiB)
      # sizes the raw image.
      mkHetznerSystem =
        {
          system,
          modules ? [ ],
          diskSize ? "auto",
        }:
        lib.nixosSystem {
          inherit system;
          modules = [
            self.nixosModules.hetzner
            { hetznix.image.diskSize = lib.mkDefault diskSize; }
          ]
          ++ modules;
        };

      hostName = system: "hetzner-${lib.head (lib.splitString "-" system)}";
    in
    {
      lib = { inherit mkHetznerSystem; };

      nixosModules.hetzner = ./nix/hetzner.nix;
      nixosModules.default = self.nixosModules.hetzner;

      nixosConfigurations = lib.listToAttrs (
        map (system: lib.nameValuePair (hostName system) (mkHetznerSystem { inherit system; })) imageSystems
      );

      # nix build .#diskImages.x86_64-linux.hetzner  ->  result/nixos.img (raw)
      diskImages = forAll imageSystems (system: {
        hetzner = self.nixosConfigurations.${hostName system}.config.system.build.hetznerImage;
      });

      packages = forAll cliSystems (
        system:
        let
          pkgs = nixpkgs.legacyPackages.${system};
        in
        {
          hetznix = pkgs.callPackage ./nix/package.nix { };
          default = self.packages.${system}.hetznix;
        }
      );

      apps = forAll cliSystems (system: {
        default = {
          type = "app";
          program = lib.getExe self.packages.${system}.hetznix;
        };
      });
    };
}
