/**
 * The guest's /init (busybox sh): mounts the store and work shares, then acts as a dumb process
 * executor for the host, which owns the task's ordering and restart logic (agent/thermos/machine.ts).
 * Speaks guest-protocol.ts over the serial console.
 */

/** Bump when the script changes so cached initramfs images are rebuilt. */
export const GUEST_INIT_VERSION = 2;

export const GUEST_INIT = `#!/bin/busybox sh
# mxc microVM init. Host commands arrive on the console, one per line (see guest-protocol.ts).
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /nix/store /work /etc
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
say() { echo "@@mxc:$*"; }
die() { say "f:$*"; sync; poweroff -f; sleep 5; }
load() { for m in $(cat "$1"); do insmod "/lib/modules/$m.ko" || say "w:insmod $m failed"; done; }
load /lib/modules/order.base
[ -e /mxc/net ] && load /lib/modules/order.net
O=trans=virtio,version=9p2000.L,msize=262144
mount -t 9p -o ro,$O,cache=loose nixstore /nix/store || die "cannot mount the store share"
mount -t 9p -o $O,cache=mmap work /work || die "cannot mount the work share"
ip link set lo up
if [ -e /mxc/net ]; then
  ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 || say "w:network setup failed"
  echo 'nameserver 10.0.2.3' > /etc/resolv.conf
fi
stty -echo 2>/dev/null

# run NAME RUN: one run of a process, output tagged line by line, exit code reported.
start() {
  n=$1 r=$2 f=/run/p-$1-$2
  mkfifo $f.o $f.e
  awk -v p="@@mxc:o:$n:$r:" '{print p $0; fflush()}' <$f.o &
  a=$!
  awk -v p="@@mxc:e:$n:$r:" '{print p $0; fflush()}' <$f.e &
  b=$!
  # setsid: own process group, so kill reaches the whole tree.
  setsid sh /mxc/proc/$n </dev/null >$f.o 2>$f.e &
  pid=$!
  echo $pid >/run/pid-$n
  say "s:$n:$r"
  wait $pid 2>/dev/null
  c=$?
  kill -KILL -$pid 2>/dev/null
  wait $a $b
  rm -f $f.o $f.e /run/pid-$n
  say "x:$n:$r:$c"
}

say r
while IFS= read -r cmd; do
  set -- $cmd
  case "$1" in
    run) start "$2" "$3" & ;;
    kill) [ -f /run/pid-$2 ] && kill -$3 -$(cat /run/pid-$2) 2>/dev/null ;;
    off) break ;;
  esac
done
kill -KILL -1 2>/dev/null
sync
umount /work 2>/dev/null
poweroff -f
`;
