/**
 * `npm run example:images`: import the example app's Docker images (`crate-test/app:v1`, `:v2`,
 * `:broken`; built from busybox, no registry or network needed) into the Docker the running operator
 * uses: the socket in `<state dir>/.host/current.json` (written by `npm start`), else
 * CRATE_DOCKER_SOCKET, else /var/run/docker.sock. The state dir is CRATE_STATE_DIR or ./state.
 * The private dockerd of `npm start` keeps its images across restarts.
 */
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { importTestImages, TEST_IMAGES } from '../test/fixtures/images.ts';

const stateDir = path.resolve(process.env.CRATE_STATE_DIR ?? './state');
let socket = process.env.CRATE_DOCKER_SOCKET ?? '/var/run/docker.sock';
try {
  const current = JSON.parse(await readFile(path.join(stateDir, '.host', 'current.json'), 'utf8')) as { docker?: { socket?: string } };
  if (current.docker?.socket) socket = current.docker.socket;
} catch {
  // No embedded start running: use the environment or the default socket.
}
const work = await mkdtemp(path.join(tmpdir(), 'crate-example-images-'));
try {
  await importTestImages(socket, work);
  console.log(`imported ${TEST_IMAGES.v1}, ${TEST_IMAGES.v2}, ${TEST_IMAGES.broken} into the Docker at ${socket}`);
} finally {
  await rm(work, { recursive: true, force: true });
}
