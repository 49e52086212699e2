# Size units, as nix-aurora: powers of 1024, so `ram = 64 * MB;` is 67108864 bytes.
rec {
  B = 1;
  KB = 1024 * B;
  MB = 1024 * KB;
  GB = 1024 * MB;
  TB = 1024 * GB;
}
