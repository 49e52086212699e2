# The host's static busybox, brought into the store so scripts can name their interpreter by
# store path without nixpkgs. A fixed-output derivation (flat sha256 of the binary, which flat
# mode stores non-executable) plus a directory holding an executable copy named `busybox`:
# busybox picks its applet from argv[0]'s basename, so the interpreter must be `…/busybox`. Impure evaluation (nix-build) hashes the host
# binary; pure evaluation (flakes) cannot read /usr/bin and uses the pinned hash below. Both give
# the same store paths when the host's busybox is the pinned one.
{
  system,
  hostBusybox ? "/usr/bin/busybox",
  sha256 ? null,
}:
let
  # sha256 (flat) of Debian 12's busybox-static 1:1.35.0-4+deb12u1+b1 (amd64) /usr/bin/busybox.
  pinned = import ./busybox-pin.nix;
  pure = !(builtins ? currentSystem);
  hash =
    if sha256 != null then
      sha256
    else if pure then
      pinned.sha256
    else
      builtins.hashFile "sha256" (/. + hostBusybox);

  binary = derivation {
    name = "busybox-static";
    inherit system;
    builder = hostBusybox;
    args = [
      "sh"
      "-c"
      "\"$builder\" cat \"$builder\" > \"$out\""
    ];
    outputHashMode = "flat";
    outputHashAlgo = "sha256";
    outputHash = hash;
  };
in
derivation {
  name = "busybox";
  inherit system;
  builder = hostBusybox;
  args = [
    "sh"
    "-c"
    "\"$builder\" mkdir \"$out\" && \"$builder\" cp \"$binary\" \"$out/busybox\" && \"$builder\" chmod 555 \"$out/busybox\""
  ];
  inherit binary;
}
