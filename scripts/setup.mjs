#!/usr/bin/env node
// `npm run setup [-- --quick]`: make this host ready to run and test Crate Operator. Idempotent.
//
// 1. Installs the host packages whose binaries are missing (apt-get update, then apt-get install -y),
//    with service starts blocked during the install (policy-rc.d), so no system dockerd or caddy
//    appears beside the private ones the harness and the dev mode start. Needs root only when
//    something is missing.
// 2. Runs `npm ci` when node_modules is missing or older than package-lock.json.
//
// `--quick` (used by prestart/pretest) prints nothing when everything is present; it only stats files.
// Plain Node with no dependencies: it must run before node_modules exists. No shell: argv only.
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const quick = process.argv.includes('--quick');
const log = (msg) => console.error(`setup: ${msg}`);

/** What the operator and its tests need: a binary (any of the paths), and the apt package providing it. */
const NEEDS = [
  { what: 'caddy', paths: ['/usr/bin/caddy'], pkg: 'caddy' },
  { what: 'dockerd', paths: ['/usr/sbin/dockerd', '/usr/bin/dockerd'], pkg: 'docker.io' },
  { what: 'containerd', paths: ['/usr/bin/containerd', '/usr/sbin/containerd'], pkg: 'docker.io' },
  { what: 'runc', paths: ['/usr/sbin/runc', '/usr/bin/runc'], pkg: 'docker.io' },
  { what: 'docker-proxy', paths: ['/usr/sbin/docker-proxy', '/usr/bin/docker-proxy', '/usr/libexec/docker/docker-proxy'], pkg: 'docker.io' },
  { what: 'busybox (static)', paths: ['/bin/busybox'], pkg: 'busybox-static', check: isStatic },
  { what: 'docker-registry', paths: ['/usr/bin/docker-registry'], pkg: 'docker-registry' },
  { what: 'htpasswd', paths: ['/usr/bin/htpasswd'], pkg: 'apache2-utils' },
  // The examples walkthrough (examples/README.md) reaches the apps with curl.
  { what: 'curl', paths: ['/usr/bin/curl'], pkg: 'curl' },
  { what: 'systemd', paths: ['/lib/systemd/systemd', '/usr/lib/systemd/systemd'], pkg: 'systemd' },
  { what: 'systemctl', paths: ['/usr/bin/systemctl', '/bin/systemctl'], pkg: 'systemd' },
  { what: 'unshare', paths: ['/usr/bin/unshare'], pkg: 'util-linux' },
  { what: 'ip', paths: ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'], pkg: 'iproute2' },
];

/** True when the ELF file has no program interpreter (statically linked); the Docker test image needs that. */
function isStatic(file) {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(8192);
    const n = readSync(fd, buf, 0, buf.length, 0);
    return !buf.subarray(0, n).includes('/ld-linux');
  } finally {
    closeSync(fd);
  }
}

function missingPackages() {
  const missing = [];
  for (const n of NEEDS) {
    const found = n.paths.find((p) => existsSync(p));
    if (!found || (n.check && !n.check(found))) missing.push(n);
  }
  return missing;
}

function run(cmd, args, extraEnv = {}) {
  log(`$ ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { stdio: 'inherit', cwd: root, env: { ...process.env, ...extraEnv } });
  if (r.error) throw new Error(`${cmd} could not run: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed with exit code ${r.status ?? r.signal}`);
}

function installPackages(missing) {
  const pkgs = [...new Set(missing.map((m) => m.pkg))];
  log(`missing: ${missing.map((m) => m.what).join(', ')} -> apt packages: ${pkgs.join(' ')}`);
  if (process.getuid?.() !== 0) {
    throw new Error(`installing packages needs root. Run as root: apt-get update && apt-get install -y ${pkgs.join(' ')}`);
  }
  if (!existsSync('/usr/bin/apt-get')) {
    throw new Error(`apt-get not found: this host is not Debian/Ubuntu. Install by hand: ${pkgs.join(' ')}`);
  }
  // Block service starts while installing: package scripts would otherwise start a system dockerd
  // (with its own docker0 bridge and iptables rules) or caddy on :80. Keep a policy that already exists.
  const policy = '/usr/sbin/policy-rc.d';
  const ownPolicy = !existsSync(policy);
  if (ownPolicy) writeFileSync(policy, '#!/bin/sh\n# written by crate-operator setup during apt-get install\nexit 101\n', { mode: 0o755 });
  try {
    const env = { DEBIAN_FRONTEND: 'noninteractive' };
    run('apt-get', ['update'], env);
    run('apt-get', ['install', '-y', '--no-install-recommends', ...pkgs], env);
  } finally {
    if (ownPolicy) unlinkSync(policy);
  }
  const still = missingPackages();
  if (still.length > 0) throw new Error(`still missing after install: ${still.map((m) => `${m.what} (${m.pkg})`).join(', ')}`);
}

function mtime(p) {
  try {
    return statSync(p).mtimeMs;
  } catch {
    return undefined;
  }
}

function npmCiNeeded() {
  const installed = mtime(path.join(root, 'node_modules', '.package-lock.json'));
  const lock = mtime(path.join(root, 'package-lock.json'));
  if (installed === undefined) return 'node_modules is missing';
  if (lock !== undefined && lock > installed) return 'package-lock.json is newer than node_modules';
  return undefined;
}

function checkNode() {
  const [maj, min] = process.versions.node.split('.').map(Number);
  if (maj < 20 || (maj === 20 && min < 19)) throw new Error(`Node ${process.versions.node} is too old: need >= 20.19`);
}

try {
  checkNode();
  const missing = missingPackages();
  if (missing.length > 0) installPackages(missing);
  else if (!quick) log('host packages present');
  const why = npmCiNeeded();
  if (why) {
    log(`${why}: running npm ci`);
    run('npm', ['ci', '--no-audit', '--no-fund']);
  } else if (!quick) log('node_modules up to date');
  if (!quick) log('ready');
} catch (err) {
  log(`FAILED: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
