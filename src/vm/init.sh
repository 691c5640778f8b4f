#!/bin/busybox sh
# The guest's first process (swaplab matrix --kernel). It mounts the host's
# files read-only over 9p, gives the guest its own /proc, /sys, /dev and
# tmpfs folders where the experiments write (/tmp, /run, /root, /var/tmp),
# then makes the host's root its root (switch_root, not chroot: in a chroot
# unshare(CLONE_NEWUSER) fails with EPERM) and execs swaplab there as PID 1.
# Every failure is printed with the marker the host waits for, and powers off.
/bin/busybox --install -s /bin
export PATH=/bin

fail() {
  echo "SWAPLAB-GUEST-FAILED: $*"
  poweroff -f
}

# The job: $exe (the swaplab to run) and run (switch_root and exec it).
. /job

mount -t proc proc /proc || fail "mount /proc"
mount -t sysfs sys /sys || fail "mount /sys"
mount -t devtmpfs dev /dev || fail "mount /dev"
for m in $(cat /modules/order); do
  insmod "/modules/$m" || fail "insmod $m"
done
# cache=loose: the share is read-only, so the guest may keep its pages (the
# default fetches every page of every program over 9p again, each exec).
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 host /host \
  || fail "mount the host's files (9p, tag host)"
mount -t proc proc /host/proc || fail "mount /host/proc"
mount -t sysfs sys /host/sys || fail "mount /host/sys"
mount -t devtmpfs dev /host/dev || fail "mount /host/dev"
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts || fail "mount /host/dev/pts"
mount -t tmpfs shm /host/dev/shm || fail "mount /host/dev/shm"
# The tmpfs folders hide the host's: a swaplab checked out under one of
# them (a clone in /tmp) keeps its top folder, moved back over the tmpfs.
keep=
for d in /run /tmp /root /var/tmp; do
  case "$exe" in
    "$d"/*) rest=${exe#"$d"/}; keep="$d/${rest%%/*}" ;;
  esac
done
if [ -n "$keep" ]; then
  mkdir -p /keep && mount --bind "/host$keep" /keep || fail "keep $keep visible"
fi
for d in /run /tmp /root /var/tmp; do
  mount -t tmpfs -o mode=1777 tmp "/host$d" || fail "mount a tmpfs on $d"
done
if [ -n "$keep" ]; then
  mkdir -p "/host$keep" && mount --move /keep "/host$keep" || fail "move $keep back"
fi
chmod 700 /host/root
mkdir -p /host/run/swaplab-out
mount -t 9p -o trans=virtio,version=9p2000.L out /host/run/swaplab-out \
  || fail "mount the report folder (9p, tag out)"
ip link set lo up || fail "ip link set lo up"
[ -x "/host$exe" ] || fail "$exe cannot be run in the guest"
echo "SWAPLAB-GUEST-UP $(uname -r)"
run
