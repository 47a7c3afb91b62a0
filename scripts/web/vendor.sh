#!/usr/bin/env bash
# Re-vendor the workbench's charting library: Apache ECharts from the npm registry, checked
# against the sha256 below, copied into crates/server/assets/vendor/ (compiled into the
# binary; nothing is fetched at run time). Run from anywhere; needs npm.
set -euo pipefail
VERSION=5.6.0
TGZ_SHA256=e1b82487dd7f8d9f0438eec1f1433051148e0095ac7a15d4db890afda45cf610
JS_SHA256=bf4a223524e40b77c304bec67e1222cf551f14880cf42c69dc046558e11c07b1
repo="$(cd "$(dirname "$0")/../.." && pwd)"
dst="$repo/crates/server/assets/vendor"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "echarts@$VERSION" >/dev/null)
echo "$TGZ_SHA256  $tmp/echarts-$VERSION.tgz" | sha256sum -c --quiet
tar -xzf "$tmp/echarts-$VERSION.tgz" -C "$tmp" package/dist/echarts.min.js package/LICENSE package/NOTICE
echo "$JS_SHA256  $tmp/package/dist/echarts.min.js" | sha256sum -c --quiet
cp "$tmp/package/dist/echarts.min.js" "$dst/echarts.min.js"
cp "$tmp/package/LICENSE" "$dst/ECHARTS-LICENSE"
cp "$tmp/package/NOTICE" "$dst/ECHARTS-NOTICE"
echo "vendored echarts $VERSION into $dst"
