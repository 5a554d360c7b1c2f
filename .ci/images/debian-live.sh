#!/usr/bin/env bash
# Builds the real distributions the QEMU tests boot (issue 27) from
# Debian 12's packages, once, and prints the folder that holds them:
#
#   vmlinuz            Debian's kernel
#   initrd.live-boot   its initramfs-tools initrd with live-boot
#   initrd.dracut      a dracut initrd with dmsquash-live, same kernel
#   filesystem.squashfs  the root filesystem (systemd, a getty on the
#                      serial console, a nonce in /etc/issue and a unit
#                      that prints /proc/mounts to the console)
#   nonce              the nonce written into the squashfs
#
# The folder is /var/cache/boottorrent-test/<key>, key = sha256 of this
# script: everything that goes in is named here (packages from Debian's
# archive, the same suite), so a change of the recipe builds anew and an
# unchanged one is reused. It is built in a temporary folder and renamed,
# so a run that stops half-way leaves nothing that looks finished.
#
# The initrds are built inside the image's own root (chroot), never on
# the host: dracut and initramfs-tools exclude each other as Debian
# packages, and installing either on the host would rewrite its /boot.
# Needs root, mmdebstrap and squashfs-tools (.ci/packages).
set -euo pipefail

suite=bookworm
packages=linux-image-amd64,live-boot,systemd-sysv,udev,kmod
dracut_packages="dracut dracut-live"
cache=${BOOTTORRENT_TEST_CACHE:-/var/cache/boottorrent-test}
key=$( { cat "$0"; echo "$suite $packages $dracut_packages"; } | sha256sum | cut -c1-16)
out=$cache/debian-live-$key
if [ -f "$out/filesystem.squashfs" ]; then
	echo "$out"
	exit 0
fi
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.build-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
nonce=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$nonce" > "$tmp/nonce"

# The customize hooks run inside mmdebstrap with the chroot's /proc, /sys
# and /dev mounted: first the live-boot initrd (initramfs-tools), then
# dracut replaces initramfs-tools in the same root and builds the
# dmsquash-live initrd. The root file system keeps neither: what an
# initrd needs is in the initrd.
mmdebstrap --variant=minbase --include="$packages" \
	--customize-hook='chroot "$1" update-initramfs -u -k all' \
	--customize-hook="cp \"\$1\"/boot/initrd.img-* '$tmp/initrd.live-boot'" \
	--customize-hook="chroot \"\$1\" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $dracut_packages" \
	--customize-hook='kver=$(ls "$1"/lib/modules); chroot "$1" dracut --force --no-hostonly --add dmsquash-live --omit "plymouth i18n" --add-drivers "loop squashfs overlay isofs" /tmp/initrd.dracut "$kver"' \
	--customize-hook="cp \"\$1\"/tmp/initrd.dracut '$tmp/initrd.dracut'; rm -f \"\$1\"/tmp/initrd.dracut" \
	--customize-hook="cp \"\$1\"/boot/vmlinuz-* '$tmp/vmlinuz'" \
	"$suite" "$tmp/root"

root=$tmp/root
echo "boottorrent-test" > "$root/etc/hostname"
printf 'Debian GNU/Linux 12 \\n \\l\nboottorrent-nonce %s\n\n' "$nonce" > "$root/etc/issue"
echo "$nonce" > "$root/etc/boottorrent-nonce"
cat > "$root/etc/systemd/system/boottorrent-mounts.service" <<'UNIT'
[Unit]
Description=Print the root and live medium mounts to the console (boottorrent test)
After=local-fs.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'while read -r l; do echo "BT-MOUNT $l"; done < /proc/mounts; echo "BT-NONCE $(cat /etc/boottorrent-nonce)"; echo "BT-MEM $(grep -E "^(MemTotal|MemAvailable)" /proc/meminfo | tr -s " " | tr "\n" " ")"'
StandardOutput=tty
TTYPath=/dev/console

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/boottorrent-mounts.service "$root/etc/systemd/system/multi-user.target.wants/boottorrent-mounts.service"
# Smaller is faster under TCG: drivers a VM never loads, documentation,
# and the kernel and initrds (kept beside the squashfs) leave the image.
kver=$(ls "$root/lib/modules")
m=$root/lib/modules/$kver/kernel
rm -rf "$m/drivers/gpu" "$m/drivers/media" "$m/drivers/net/wireless" "$m/drivers/infiniband" \
	"$m/drivers/staging" "$m/drivers/iio" "$m/drivers/isdn" "$m/drivers/bluetooth" "$m/sound" \
	"$m/net/wireless" "$m/net/mac80211" "$m/net/bluetooth" \
	"$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/locale" "$root/usr/share/info" \
	"$root"/boot/* "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/*
chroot "$root" depmod "$kver"
# live-boot's init-bottom mounts /proc, /sys and /dev of the new root: keep
# them, empty, in the image (without them the kernel panics).
for d in proc sys dev run tmp; do
	mkdir -p "$root/$d"
done
# zstd: the booted OS reads the squashfs under TCG, and unpacking xz was
# the slower part of the boot there.
mksquashfs "$root" "$tmp/filesystem.squashfs" -comp zstd -Xcompression-level 15 -noappend -quiet \
	-wildcards -e 'proc/*' 'sys/*' 'dev/*' 'run/*' 'tmp/*'
rm -rf "$root"
chmod 0755 "$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "$out"
