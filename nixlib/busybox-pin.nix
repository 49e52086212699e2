# The NAR sha256 of the directory { busybox } that pure evaluation (flakes) assumes; see busybox.nix.
# Debian 12's busybox-static 1:1.35.0-4+deb12u1+b1 (amd64). After an upgrade:
#   nix-hash --type sha256 --base32 "$(nix-instantiate --eval --read-write-mode -E \
#     'builtins.path { path = /usr/bin; name = "busybox"; filter = p: t: baseNameOf p == "busybox"; }' | tr -d '"')"
{
  narHash = "08f8d8hryay76i5ifs5ssn91cxyaffm7c4lkghd6z0rywb3xn8zl";
}
