# The flat sha256 of the host busybox that pure evaluation (flakes) assumes; see busybox.nix.
# After a busybox-static upgrade: sha256sum /usr/bin/busybox, paste the hex here.
{
  sha256 = "3d9f2889d6782537624a4e1a10e68a2ddd53e0ee8bac02676f27308f42ec6bf6";
}
