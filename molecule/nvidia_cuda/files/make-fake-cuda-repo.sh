#!/bin/sh
# Builds, on a Molecule host, a FAKE flat apt repository standing in for NVIDIA's CUDA repository: one fake
# package nvidia-fabricmanager-580 580.95.05-1 (the fake daemon and unit from fake-fabricmanager/), its Packages
# index and an InRelease signed by a throw-away key made here (exported to KEY for the role's
# nvidia_cuda_repo_key_content). Usage: make-fake-cuda-repo.sh REPO_DIR SOURCE_DIR KEY
set -eu
repo=$1 src=$2 key=$3
build=$(mktemp -d)
export GNUPGHOME="$build/gnupg"
mkdir -m 700 "$GNUPGHOME"
pkg="$build/pkg"
mkdir -p "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/usr/lib/systemd/system" "$repo"
install -m 0755 "$src/nv-fabricmanager" "$pkg/usr/bin/nv-fabricmanager"
install -m 0644 "$src/nvidia-fabricmanager.service" "$pkg/usr/lib/systemd/system/nvidia-fabricmanager.service"
cat > "$pkg/DEBIAN/control" <<CONTROL
Package: nvidia-fabricmanager-580
Version: 580.95.05-1
Architecture: $(dpkg --print-architecture)
Maintainer: claude-vllm-fleet tests <tests@example.invalid>
Description: FAKE Fabric Manager for Molecule tests (stand-in, trains nothing)
CONTROL
deb="$repo/nvidia-fabricmanager-580_580.95.05-1_$(dpkg --print-architecture).deb"
dpkg-deb --root-owner-group --build "$pkg" "$deb" >/dev/null
{
    dpkg-deb --field "$deb"
    echo "Filename: ./$(basename "$deb")"
    echo "Size: $(stat -c %s "$deb")"
    echo "SHA256: $(sha256sum "$deb" | cut -d' ' -f1)"
    echo
} > "$repo/Packages"
{
    echo "Origin: fake-cuda-repo"
    echo "Label: FAKE CUDA repository (Molecule)"
    echo "Date: $(date -Ru)"
    echo "SHA256:"
    echo " $(sha256sum "$repo/Packages" | cut -d' ' -f1) $(stat -c %s "$repo/Packages") Packages"
} > "$repo/Release"
gpg --batch --quiet --pinentry-mode loopback --passphrase '' \
    --quick-gen-key "FAKE CUDA repository (Molecule) <tests@example.invalid>" ed25519 sign never
gpg --batch --quiet --yes --clearsign -o "$repo/InRelease" "$repo/Release"
gpg --batch --armor --export > "$key"
gpgconf --kill gpg-agent || true
rm -rf "$build"
