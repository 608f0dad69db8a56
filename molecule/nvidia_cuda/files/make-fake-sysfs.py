"""Writes a FAKE sysfs PCI devices directory (Molecule stand-in: a container has no GPU) from a JSON description of
tests/fixtures/nvidia/sysfs: per function its vendor, device and class files and a 'driver' link named after
the bound driver. Usage: make-fake-sysfs.py DESCRIPTION.json TARGET_DIR"""
import json
import os
import sys

description, target = sys.argv[1], sys.argv[2]
with open(description, encoding="utf-8") as handle:
    devices = json.load(handle)
for address, entry in devices.items():
    base = os.path.join(target, address)
    os.makedirs(base, exist_ok=True)
    for key in ("vendor", "device", "class"):
        with open(os.path.join(base, key), "w", encoding="ascii") as handle:
            handle.write(entry[key] + "\n")
    if entry.get("driver"):
        os.symlink(f"../../../bus/pci/drivers/{entry['driver']}", os.path.join(base, "driver"))
