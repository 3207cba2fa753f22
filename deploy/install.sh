#!/usr/bin/env bash
# Installs tern: ternd and ternctl, their man pages, ternctl's shell completions, the
# systemd unit and the example configurations.
#
#   deploy/install.sh [--prefix PREFIX] [--destdir DIR] [--profile release|debug]
#                     [--bin-dir DIR] [--zsh-dir DIR] [--gzip-man]
#
#   --prefix PREFIX   where it goes (default /usr/local): PREFIX/bin, PREFIX/share/man/man1,
#                     PREFIX/share/{bash-completion/completions,zsh/site-functions,
#                     fish/vendor_completions.d}, PREFIX/lib/systemd/system (its ExecStart
#                     names PREFIX/bin/ternd), PREFIX/share/doc/tern/examples
#   --destdir DIR     stage under DIR instead of / (what a package is made from)
#   --profile P       build with cargo (`cargo build --workspace --bins`, --release for
#                     release; the default) and install from $CARGO_TARGET_DIR/P
#   --bin-dir DIR     install the ternd and ternctl in DIR; nothing is built
#   --zsh-dir DIR     zsh completions here instead (a distribution's vendor-completions)
#   --gzip-man        compress the man pages (gzip -9n), as distributions ship them
#
# The man pages and completions are written by the ternctl being installed (`ternctl man`,
# `ternctl completions`), so they describe exactly those binaries.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tern-target}"

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

prefix=/usr/local destdir="" profile=release bin_dir="" zsh_dir="" gzip_man=false
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a folder}"; shift 2 ;;
    --destdir) destdir="${2:?--destdir needs a folder}"; shift 2 ;;
    --profile) profile="${2:?--profile needs release or debug}"; shift 2 ;;
    --bin-dir) bin_dir="${2:?--bin-dir needs a folder}"; shift 2 ;;
    --zsh-dir) zsh_dir="${2:?--zsh-dir needs a folder}"; shift 2 ;;
    --gzip-man) gzip_man=true; shift ;;
    -h | --help) usage 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; usage ;;
  esac
done
case "$prefix" in /*) ;; *) echo "install.sh: --prefix must be an absolute path" >&2; exit 2 ;; esac
zsh_dir="${zsh_dir:-$prefix/share/zsh/site-functions}"

# What is installed besides the binaries; another part of the tree maintains them.
unit="$root/deploy/systemd/ternd.service"
configs=("$root"/deploy/config/*.toml)
[ -f "$unit" ] || { echo "install.sh: $unit is missing" >&2; exit 1; }
[ -f "${configs[0]}" ] || { echo "install.sh: no example configuration in $root/deploy/config" >&2; exit 1; }

if [ -z "$bin_dir" ]; then
  case "$profile" in
    release) (cd "$root" && cargo build --workspace --bins --release) ;;
    debug) (cd "$root" && cargo build --workspace --bins) ;;
    *) echo "install.sh: --profile is release or debug, not $profile" >&2; exit 2 ;;
  esac
  bin_dir="$CARGO_TARGET_DIR/$profile"
fi
for b in ternd ternctl; do
  [ -x "$bin_dir/$b" ] || { echo "install.sh: $bin_dir/$b does not exist (build it, or pass --bin-dir)" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$bin_dir/ternctl" man --dir "$work/man" >/dev/null

dest="$destdir$prefix"
install -d -m 0755 "$dest/bin" "$dest/share/man/man1" "$dest/share/bash-completion/completions" \
  "$destdir$zsh_dir" "$dest/share/fish/vendor_completions.d" "$dest/lib/systemd/system" \
  "$dest/share/doc/tern/examples"
install -m 0755 "$bin_dir/ternd" "$bin_dir/ternctl" "$dest/bin/"
for page in "$work"/man/*.1; do
  if $gzip_man; then
    gzip -9n -c "$page" >"$dest/share/man/man1/$(basename "$page").gz"
    chmod 0644 "$dest/share/man/man1/$(basename "$page").gz"
  else
    install -m 0644 "$page" "$dest/share/man/man1/"
  fi
done
"$bin_dir/ternctl" completions bash >"$work/ternctl.bash"
"$bin_dir/ternctl" completions zsh >"$work/_ternctl"
"$bin_dir/ternctl" completions fish >"$work/ternctl.fish"
install -m 0644 "$work/ternctl.bash" "$dest/share/bash-completion/completions/ternctl"
install -m 0644 "$work/_ternctl" "$destdir$zsh_dir/_ternctl"
install -m 0644 "$work/ternctl.fish" "$dest/share/fish/vendor_completions.d/ternctl.fish"
# The unit names /usr/bin/ternd; elsewhere it runs the one installed here.
sed "s#/usr/bin/ternd#$prefix/bin/ternd#g" "$unit" >"$work/ternd.service"
install -m 0644 "$work/ternd.service" "$dest/lib/systemd/system/ternd.service"
install -m 0644 "${configs[@]}" "$dest/share/doc/tern/examples/"

echo "installed tern $("$bin_dir/ternctl" version | cut -d' ' -f2-) into ${destdir:+$destdir (staged) }$prefix"
