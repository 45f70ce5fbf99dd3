/**
 * What the harness gives every test (via `getTestHost()`): the addresses of the real components it
 * started for this run. Plain JSON, so vitest can hand it from globalSetup to the test workers.
 */
export interface TestHost {
  /** The run's private folder (`/tmp/crate-h-<id>`). Tests make their own folders with `tempDir()`. */
  tmpRoot: string;
  systemd: {
    /** `XDG_RUNTIME_DIR` and `XDG_CONFIG_HOME` of the private user manager; pass to `systemctl --user`. */
    env: Record<string, string>;
    /** Where unit files go (`$XDG_CONFIG_HOME/systemd/user`). */
    unitDir: string;
  };
  docker: {
    /** Unix socket of the private dockerd. */
    socket: string;
    /** The test app image (`crate-test/app:v1`), tag included. */
    image: string;
    /** Every test app image: `v1`, `v2` and `broken` (health check fails). */
    images: { v1: string; v2: string; broken: string };
    /** Plain busybox image (`crate-test/busybox:1`), no entrypoint; `CMD ["/bin/sh"]`. */
    busyboxImage: string;
    /** The private bridge's subnet (`10.x.y.0/24`). */
    subnet: string;
  };
  caddy: {
    /** `http://127.0.0.1:<port>`, no trailing slash. */
    adminUrl: string;
    /** Port of the shared HTTP server `serverName` on 127.0.0.1. */
    httpPort: number;
    /** Name of the shared HTTP server (`crate`). Tests that rewrite whole servers use `caddyServer()` instead. */
    serverName: string;
  };
  assets: {
    /** `http://127.0.0.1:<port>`: `/app-<version>.tar.gz`, `/app-<version>-broken.tar.gz`, `/files/<name>`. */
    baseUrl: string;
    /** Files written here are served at `<baseUrl>/files/<name>`. */
    filesDir: string;
  };
}
