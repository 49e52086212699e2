# The NAR sha256 of the directory { busybox } that pure evaluation (flakes) assumes; see busybox.nix.
# Debian 12's busybox-static 1:1.35.0-4+deb12u1+b1 (amd64). After an upgrade:
#   nix-hash --type sha256 --base32 "$(nix-instantiate --eval --read-write-mode -E \
#     'builtins.path { path = /usr/bin; name = "busybox"; filter = p: t: baseNameOf p == "busybox"; }' | tr -d '"')"
{
  # sha256sum /usr/bin/busybox: tells whether the host has the pinned busybox.
  sha256 = "3d9f2889d6782537624a4e1a10e68a2ddd53e0ee8bac02676f27308f42ec6bf6";
  narHash = "08f8d8hryay76i5ifs5ssn91cxyaffm7c4lkghd6z0rywb3xn8zl";
}
