#!/usr/bin/env node
// golem-js 3.6.0 + task-executor 2.0.1 against a yagna-compatible node (`golem-api node`, or the real yagna).
// Run by tests/fidelity/test_golem_js.py with NODE_PATH=<project>/.npm-clients/node_modules (scripts/bootstrap.sh
// installs the pinned packages there when GOLEM_API_WITH_CLIENTS=1).
//
// Configuration (all from the environment; `golem-api node` prints these as an `export` line):
//   YAGNA_API_URL       the node's REST root, e.g. http://127.0.0.1:7465  -> new GolemNetwork({api: {url}})
//   YAGNA_APPKEY        the app key                                          -> new GolemNetwork({api: {key}})
//   YAGNA_SUBNET        the providers' subnet (golem-api node: "public")  -> order.demand.subnetTag
//   GOLEM_REGISTRY_URL  where golem-js resolves imageTag / imageHash: it GETs
//                       $GOLEM_REGISTRY_URL/v1/image/info?count=true&tag=... (golem-js reads this variable itself,
//                       in WorkloadDemandDirector.resolveTaskPackageUrl; there is no constructor option)
//   PAYMENT_DRIVER / PAYMENT_NETWORK   default erc20 / holesky (the node's platform is erc20-holesky-tglm)
//   IMAGE_TAG           default golem-api/clients-test:1.0 (built from ../image)
//   IMAGE_HASH          default: asked from the registry by tag
//   FILE_IMAGE_TAG      default golem-api/clients-test-file:1.0: the image of the file:// flow, another hash than
//                       IMAGE_TAG's so that the provider cannot have it cached and must fetch the gftp:// URL
//   HTTP_IMAGE_TAG      the image of the network flows (Python's http.server on port 80 serving /golem/www, started
//                       by /golem/run/start-server.sh): examples/http_proxy/image; no network flows without it
//   VPN_UNAVAILABLE     set (to the reason) when the node cannot make VPNs: the network flows are skipped
//   IMAGE_FILE          the .gvmi file of FILE_IMAGE_TAG for the file:// flow (required by that flow)
//   FLOWS               comma-separated subset of flow names to run (default: all)
//   VERBOSE=1           golem-js debug log on stderr
//   SKIP_VERSION_CHECK=1  do not ask GET /version/get (golem-js's YagnaApi.getVersion answers "0.17.6"): to see
//                       what fails after connect on a node that refuses that call
//
// Each flow prints one line "PASS <flow>: <what>" or "FAIL <flow>: <why>", and a flow that cannot run because
// an earlier one failed prints "SKIP <flow>: <why>". Every flow has a time limit; waits are on golem-js's events
// (payment events), never fixed pauses. Exit code: the number of FAILs.
//
// Loaded with require(): the ES-module build crashes on downloads with "jsSha3.sha3_256 is not a function".
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { GolemNetwork, YagnaApi } = require("@golem-sdk/golem-js");
const { TaskExecutor } = require("@golem-sdk/task-executor");

const API_URL = process.env.YAGNA_API_URL || "http://127.0.0.1:7465";
const APP_KEY = process.env.YAGNA_APPKEY || "";
const SUBNET = process.env.YAGNA_SUBNET || "public";
const REGISTRY_URL = process.env.GOLEM_REGISTRY_URL || "https://registry.golem.network";
const PAYMENT = { driver: process.env.PAYMENT_DRIVER || "erc20", network: process.env.PAYMENT_NETWORK || "holesky" };
const IMAGE_TAG = process.env.IMAGE_TAG || "golem-api/clients-test:1.0";
const FILE_IMAGE_TAG = process.env.FILE_IMAGE_TAG || "golem-api/clients-test-file:1.0";
const HTTP_IMAGE_TAG = process.env.HTTP_IMAGE_TAG || "";
const ONLY = process.env.FLOWS ? new Set(process.env.FLOWS.split(",").map((s) => s.trim())) : null;
const VERBOSE = process.env.VERBOSE === "1";
// How long signing an agreement may take (the local node signs in about a second).
const SIGN_MS = Number(process.env.SIGN_TIMEOUT_MS || 30_000);

if (process.env.SKIP_VERSION_CHECK === "1") {
  YagnaApi.prototype.getVersion = async () => "0.17.6";
}

const results = [];
const started = Date.now();
const work = fs.mkdtempSync(path.join(os.tmpdir(), "golem-js-flows-"));

function elapsed() {
  return ((Date.now() - started) / 1000).toFixed(1).padStart(6) + "s";
}

function report(status, flow, text) {
  results.push({ status, flow, text });
  console.log(`${status} ${flow}: ${text}`);
}

function describe(err) {
  if (!err) return String(err);
  const parts = [];
  let e = err;
  for (let depth = 0; e && depth < 4; depth++) {
    let s = `${e.name || "Error"}: ${e.message || e}`;
    if (e.body !== undefined) s += ` [HTTP ${e.status} ${e.url || ""} body=${JSON.stringify(e.body)}]`;
    parts.push(s);
    e = e.previous || e.cause;
  }
  return parts.join(" <- ").replace(/\s+/g, " ").slice(0, 900);
}

// A logger that keeps golem-js's warnings and errors (shown with the flow that failed), debug only with VERBOSE.
const logLines = [];
function makeLogger(ns = "golem-js") {
  const log = (level) => (msg, ctx) => {
    let c = "";
    if (ctx instanceof Error) c = " " + describe(ctx);
    else if (ctx !== undefined) {
      try {
        c = " " + JSON.stringify(ctx, (k, v) => (v instanceof Error ? describe(v) : v)).slice(0, 600);
      } catch {
        c = " [ctx]";
      }
    }
    const line = `${elapsed()} ${level} ${ns}: ${msg}${c}`;
    if (level !== "DEBUG") logLines.push(line);
    if (VERBOSE || level === "ERROR" || level === "WARN") process.stderr.write(line + "\n");
  };
  return {
    child: (child) => makeLogger(`${ns}:${child}`),
    debug: log("DEBUG"),
    info: log("INFO"),
    warn: log("WARN"),
    error: log("ERROR"),
  };
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms / 1000} s: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// The flows others depend on always run.
const ALWAYS = new Set(["registry-info", "connect"]);

function wanted(flow) {
  return !ONLY || ONLY.has(flow) || ALWAYS.has(flow);
}

// Runs one flow: PASS with its summary, FAIL with the error, or SKIP when `blocker` is set.
async function flow(name, ms, fn, blocker) {
  if (!wanted(name)) return undefined;
  if (blocker) {
    report("SKIP", name, blocker);
    return undefined;
  }
  const before = logLines.length;
  try {
    const summary = await withTimeout(Promise.resolve().then(fn), ms, name);
    report("PASS", name, summary && summary.text ? summary.text : String(summary ?? "ok"));
    return summary ?? true;
  } catch (err) {
    const warnings = logLines.slice(before).filter((l) => / (WARN|ERROR) /.test(l)).slice(-3);
    report("FAIL", name, describe(err) + (warnings.length ? ` || golem-js said: ${warnings.join(" | ")}` : ""));
    return undefined;
  }
}

function newGolem() {
  return new GolemNetwork({
    api: { key: APP_KEY, url: API_URL },
    payment: PAYMENT,
    logger: makeLogger(),
    // dataTransferProtocol: "ws" is the default: transfers go through the node's /gsb-api/v1 WebSocket.
  });
}

function order(workload, extra = {}) {
  return {
    demand: {
      subnetTag: SUBNET,
      workload: { minMemGib: 0.5, minStorageGib: 1, minCpuThreads: 1, ...workload },
      // Debit notes every 5 s (the provider takes the requestor's interval), so that a short rental sees some.
      payment: { midAgreementDebitNoteIntervalSec: 5, debitNotesAcceptanceTimeoutSec: 30 },
    },
    market: {
      rentHours: 0.5,
      pricing: { model: "linear", maxStartPrice: 1, maxCpuPerHourPrice: 10, maxEnvPerHourPrice: 10 },
    },
    ...extra,
  };
}

// Counts payment events of a GolemNetwork by agreement id.
function paymentWatch(glm) {
  const seen = { debitNotesReceived: 0, debitNotesAccepted: 0, invoicesReceived: 0, invoicesAccepted: 0, errors: [] };
  const byAgreement = new Map();
  const bump = (agreementId, key) => {
    const entry = byAgreement.get(agreementId) || { debitNotesAccepted: 0, invoicesAccepted: 0 };
    entry[key] += 1;
    byAgreement.set(agreementId, entry);
  };
  const ev = glm.payment.events;
  ev.on("debitNoteReceived", () => seen.debitNotesReceived++);
  ev.on("invoiceReceived", () => seen.invoicesReceived++);
  ev.on("debitNoteAccepted", ({ debitNote }) => {
    seen.debitNotesAccepted++;
    bump(debitNote.agreementId, "debitNotesAccepted");
  });
  ev.on("invoiceAccepted", ({ invoice }) => {
    seen.invoicesAccepted++;
    bump(invoice.agreementId, "invoicesAccepted");
  });
  for (const name of ["errorAcceptingInvoice", "errorAcceptingDebitNote", "invoiceRejected", "debitNoteRejected"]) {
    ev.on(name, (e) => seen.errors.push(`${name}: ${describe(e.error) || ""}`));
  }
  // Resolves once `predicate()` holds, checked again on every payment event (no polling); rejects after `ms`.
  const until = (predicate, ms, what) =>
    new Promise((resolve, reject) => {
      const names = ["debitNoteReceived", "debitNoteAccepted", "invoiceReceived", "invoiceAccepted"];
      const check = () => {
        if (!predicate()) return;
        finish();
        resolve();
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`waited ${ms / 1000} s for ${what}`));
      }, ms);
      const finish = () => {
        clearTimeout(timer);
        for (const name of names) ev.off(name, check);
      };
      for (const name of names) ev.on(name, check);
      check();
    });
  return { seen, byAgreement, until };
}

function expectEqual(actual, expected, what) {
  if (JSON.stringify(actual) !== JSON.stringify(expected)) {
    throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}

async function checkResult(result, what) {
  if (!result || result.result !== "Ok") {
    throw new Error(`${what}: result ${JSON.stringify(result && { result: result.result, message: result.message, stderr: result.stderr })}`);
  }
  return result;
}

async function registryInfo(query) {
  const url = `${REGISTRY_URL}/v1/image/info?${query}`;
  const response = await fetch(url);
  const text = await response.text();
  if (!response.ok) throw new Error(`GET ${url} -> ${response.status} ${text}`);
  return JSON.parse(text);
}

// One rental of an image, used by the image flows: the exe-unit must run the image's own script.
async function rentAndRunImage(glm, watch, workload, label) {
  const rental = await glm.oneOf({ order: order(workload), signalOrTimeout: SIGN_MS });
  try {
    const exe = await rental.getExeUnit(60_000);
    const result = await checkResult(await exe.run("/golem/run/hello.sh", [label]), `${label}: run hello.sh`);
    const first = String(result.stdout).split("\n")[0];
    expectEqual(first, `hello from the image: ${label}`, `${label}: first line`);
    return `provider ${exe.provider.name}, task_package ${String(rental.agreement.model.demand.properties["golem.srv.comp.task_package"]).slice(0, 90)}…`;
  } finally {
    await rental.stopAndFinalize(30_000).catch((err) => logLines.push(`stopAndFinalize (${label}): ${describe(err)}`));
  }
}

async function main() {
  console.log(`# golem-js flows against ${API_URL} (subnet ${SUBNET}, registry ${REGISTRY_URL}, ${PAYMENT.driver}/${PAYMENT.network})`);

  // Probe: what golem-js's version check asks (without the app key, as its VersionApi client sends none).
  await flow("probe-version", 10_000, async () => {
    const response = await fetch(`${API_URL}/version/get`);
    const text = await response.text();
    if (!response.ok) throw new Error(`GET /version/get (no app key) -> ${response.status} ${text}`);
    return `GET /version/get -> ${response.status} ${text.slice(0, 160)}`;
  });

  let imageHash = process.env.IMAGE_HASH;
  let fileImageHash;
  const registryOk = await flow("registry-info", 10_000, async () => {
    const info = await registryInfo(`tag=${encodeURIComponent(IMAGE_TAG)}`);
    imageHash = imageHash || info.sha3;
    fileImageHash = (await registryInfo(`tag=${encodeURIComponent(FILE_IMAGE_TAG)}`)).sha3;
    return `${IMAGE_TAG} -> sha3 ${info.sha3}, http ${info.http}`;
  });
  const imageFile = process.env.IMAGE_FILE;

  const glm = newGolem();
  const watch = paymentWatch(glm);
  const connected = await flow("connect", 20_000, async () => {
    await glm.connect();
    return "GolemNetwork.connect resolved";
  });
  const noConnection = connected ? undefined : "connect failed";

  // -- the main rental: oneOf -> getExeUnit -> run -> uploads -> downloads -> runAndStream -> stopAndFinalize ------
  let rental;
  let exe;
  const rented = await flow(
    "oneOf",
    90_000,
    async () => {
      rental = await glm.oneOf({ order: order({ imageTag: IMAGE_TAG }), signalOrTimeout: SIGN_MS });
      return `agreement ${rental.agreement.id} with ${rental.agreement.provider.name}`;
    },
    noConnection || (registryOk ? undefined : "the registry did not answer"),
  );
  const gotExe = await flow(
    "getExeUnit",
    90_000,
    async () => {
      exe = await rental.getExeUnit(60_000);
      return `activity ${exe.activity.id} on ${exe.provider.name}`;
    },
    rented ? undefined : "oneOf failed",
  );
  const noExe = gotExe ? undefined : "no exe-unit";

  await flow("run", 30_000, async () => {
    const r = await checkResult(await exe.run("echo hello-golem-js; echo to-stderr >&2; uname -s"), "run");
    expectEqual(String(r.stdout).trim().split("\n"), ["hello-golem-js", "Linux"], "stdout");
    expectEqual(String(r.stderr).trim(), "to-stderr", "stderr");
    const failing = await exe.run("exit 3");
    if (failing.result !== "Error" || !/exited with code 3/.test(String(failing.message)))
      throw new Error(`"exit 3" gave result=${failing.result} message=${JSON.stringify(failing.message)}`);
    return `stdout/stderr as expected; "exit 3" -> result Error, message ${JSON.stringify(failing.message)}`;
  }, noExe);

  const uploadText = `uploaded by golem-js at ${new Date().toISOString()}\n`;
  await flow("uploadFile", 30_000, async () => {
    const src = path.join(work, "upload.txt");
    fs.writeFileSync(src, uploadText);
    await checkResult(await exe.uploadFile(src, "/golem/work/upload.txt"), "uploadFile");
    const r = await checkResult(await exe.run("cat /golem/work/upload.txt"), "cat");
    expectEqual(r.stdout, uploadText, "file content on the provider");
    return `${uploadText.length} bytes arrived intact`;
  }, noExe);

  await flow("uploadData", 30_000, async () => {
    const data = new Uint8Array(70_000).map((_, i) => (i * 7) % 256);
    await checkResult(await exe.uploadData(data, "/golem/work/data.bin"), "uploadData");
    const r = await checkResult(await exe.run("wc -c < /golem/work/data.bin; od -An -tu1 -N4 -j7 /golem/work/data.bin"), "wc");
    const [size, bytes] = String(r.stdout).trim().split("\n");
    expectEqual(size.trim(), "70000", "size on the provider");
    expectEqual(bytes.trim().split(/\s+/), ["49", "56", "63", "70"], "bytes 7..10 on the provider");
    return "70000 bytes arrived intact";
  }, noExe);

  await flow("uploadJson", 30_000, async () => {
    const value = { hello: "golem", n: [1, 2, 3] };
    await checkResult(await exe.uploadJson(value, "/golem/work/in.json"), "uploadJson");
    const r = await checkResult(await exe.run("cat /golem/work/in.json"), "cat");
    expectEqual(JSON.parse(r.stdout), value, "JSON on the provider");
    return "JSON arrived intact";
  }, noExe);

  await flow("downloadFile", 30_000, async () => {
    await checkResult(await exe.run("seq 1 2000 > /golem/output/out.txt"), "seq");
    const dst = path.join(work, "out.txt");
    await checkResult(await exe.downloadFile("/golem/output/out.txt", dst), "downloadFile");
    const lines = fs.readFileSync(dst, "utf8").trim().split("\n");
    expectEqual([lines.length, lines[0], lines[1999]], [2000, "1", "2000"], "downloaded file");
    return `${fs.statSync(dst).size} bytes downloaded intact`;
  }, noExe);

  await flow("downloadData", 30_000, async () => {
    await checkResult(await exe.run("printf 'abc\\001\\002' > /golem/output/data.bin"), "printf");
    const r = await checkResult(await exe.downloadData("/golem/output/data.bin"), "downloadData");
    expectEqual(Array.from(r.data || []), [97, 98, 99, 1, 2], "downloaded bytes");
    return "5 bytes downloaded intact";
  }, noExe);

  await flow("downloadJson", 30_000, async () => {
    await checkResult(await exe.run(`echo '{"from": "provider", "ok": true}' > /golem/output/out.json`), "echo");
    const r = await checkResult(await exe.downloadJson("/golem/output/out.json"), "downloadJson");
    expectEqual(r.data, { from: "provider", ok: true }, "downloaded JSON");
    return "JSON downloaded intact";
  }, noExe);

  await flow("runAndStream", 40_000, async () => {
    const proc = await exe.runAndStream("/golem/run/hello.sh stream");
    const out = [];
    const err = [];
    proc.stdout.subscribe((d) => out.push(String(d)));
    proc.stderr.subscribe((d) => err.push(String(d)));
    const last = await proc.waitForExit(30_000);
    const stdout = out.join("");
    const stderr = err.join("");
    expectEqual(stdout.trim().split("\n"), ["hello from the image: stream", "line 1", "line 2", "line 3"], "streamed stdout");
    expectEqual(stderr.trim().split("\n"), ["err 1", "err 2", "err 3"], "streamed stderr");
    return `streamed ${out.length} stdout chunk(s), ${err.length} stderr chunk(s); last result ${last.result}`;
  }, noExe);

  await flow("stopAndFinalize", 90_000, async () => {
    const agreementId = rental.agreement.id;
    // at least one debit note of the running agreement (the providers issue one every 5 s) before it ends
    await watch.until(() => (watch.byAgreement.get(agreementId) || {}).debitNotesAccepted >= 1, 20_000, "a debit note");
    await rental.stopAndFinalize(60_000);
    await watch.until(() => (watch.byAgreement.get(agreementId) || {}).invoicesAccepted >= 1, 20_000, "the invoice to be accepted");
    const mine = watch.byAgreement.get(agreementId);
    if (watch.seen.errors.length) throw new Error(`payment errors: ${watch.seen.errors.join("; ")}`);
    if (mine.invoicesAccepted !== 1) throw new Error(`invoice accepted ${mine.invoicesAccepted} times`);
    if (mine.debitNotesAccepted < 1) throw new Error("no debit note was accepted");
    return `${mine.debitNotesAccepted} debit note(s) and 1 invoice accepted for ${agreementId.slice(0, 12)}…`;
  }, rented ? undefined : "oneOf failed");

  // -- images: by hash (registry ?hash=), by http URL (imageUrl + imageHash), by file:// (served by the requestor) ----
  await flow("image-by-tag", 120_000, () => rentAndRunImage(glm, watch, { imageTag: IMAGE_TAG }, "by-tag"), noConnection);
  await flow("image-by-hash", 120_000, () => rentAndRunImage(glm, watch, { imageHash }, "by-hash"),
    noConnection || (imageHash ? undefined : "no image hash"));
  await flow("image-by-url", 120_000, async () => {
    const info = await registryInfo(`hash=${imageHash}`);
    return rentAndRunImage(glm, watch, { imageUrl: info.http, imageHash }, "by-url");
  }, noConnection || (imageHash ? undefined : "no image hash"));
  await flow("image-by-file-url", 120_000, async () => {
    if (!fs.existsSync(imageFile)) throw new Error(`no image file ${imageFile}: set IMAGE_FILE`);
    const text = await rentAndRunImage(glm, watch, { imageUrl: `file://${imageFile}` }, "by-file");
    if (!text.includes(`${fileImageHash}:gftp://`)) throw new Error(`the task package is not a gftp:// URL: ${text}`);
    return text;
  }, noConnection || (imageFile ? undefined : "no image file (IMAGE_FILE)"));

  // -- manyOf: a pool of 2 rentals used at once ---------------------------------------------------------------------
  await flow("manyOf", 150_000, async () => {
    const pool = await glm.manyOf({ poolSize: 2, order: order({ imageTag: IMAGE_TAG }) });
    try {
      const [a, b] = await Promise.all([pool.acquire(SIGN_MS), pool.acquire(SIGN_MS)]);
      const [ea, eb] = await Promise.all([a.getExeUnit(60_000), b.getExeUnit(60_000)]);
      const [ra, rb] = await Promise.all([ea.run("echo pool-a"), eb.run("echo pool-b")]);
      expectEqual([String(ra.stdout).trim(), String(rb.stdout).trim()], ["pool-a", "pool-b"], "pool outputs");
      const names = [ea.provider.name, eb.provider.name];
      if (names[0] === names[1]) throw new Error(`both rentals are on ${names[0]}`);
      await Promise.all([pool.release(a), pool.release(b)]);
      return `2 rentals at once on ${names.join(" and ")}`;
    } finally {
      await pool.drainAndClear(60_000);
    }
  }, noConnection);

  // -- networks: a VPN with two rentals, HTTP through golem-js's TcpProxy, one instance reaching the other by its VPN
  // address, the network destroyed. Needs the node's VPN (root); VPN_UNAVAILABLE says why it is not there. --------
  const noVpn = noConnection
    || (process.env.VPN_UNAVAILABLE ? `no VPN on this node: ${process.env.VPN_UNAVAILABLE}` : undefined)
    || (HTTP_IMAGE_TAG ? undefined : "no HTTP image (HTTP_IMAGE_TAG)");
  const netRaw = async (method, suffix = "") => {
    const url = `${API_URL}/net-api/v1/net${suffix}`;
    const r = await fetch(url, { method, headers: { Authorization: `Bearer ${APP_KEY}` } });
    const text = await r.text();
    if (!r.ok) throw new Error(`${method} ${url} -> ${r.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
  const pageText = `served in the VPN at ${new Date().toISOString()}`;
  let network;
  const netRentals = [];
  const netExes = [];
  const netCreated = await flow("createNetwork", 20_000, async () => {
    network = await glm.createNetwork({ ip: "192.168.7.0/24" });
    const info = network.getNetworkInfo();
    expectEqual([info.ip, info.mask], ["192.168.7.0", "255.255.255.0"], "network range");
    const requestor = await glm.yagna.identity.getIdentity();
    expectEqual(info.nodes, { "192.168.7.1": requestor.identity }, "the network's nodes (the requestor first)");
    const listed = await netRaw("GET");
    expectEqual(listed.map((n) => [n.id, n.ip, n.mask]), [[network.id, "192.168.7.0/24", "255.255.255.0"]], "GET /net (the range with its prefix, as yagna lists it)");
    const nodes = await netRaw("GET", `/${network.id}/nodes`);
    expectEqual(nodes, [{ id: requestor.identity, ip: "192.168.7.1" }], "GET /net/{id}/nodes");
    return `network ${network.id} 192.168.7.0/24, the requestor at 192.168.7.1`;
  }, noVpn);

  // Two rentals in the network on two providers (the second order keeps the first provider's offers out: golem-js
  // names each VPN node after its provider, so two rentals of one provider cannot both join).
  const netRented = await flow("network-oneOf", 120_000, async () => {
    const vpnOrder = (filter) => {
      const o = order({ imageTag: HTTP_IMAGE_TAG, capabilities: ["vpn"] }, { network });
      if (filter) o.market.offerProposalFilter = filter;
      return o;
    };
    netRentals.push(await glm.oneOf({ order: vpnOrder(), signalOrTimeout: SIGN_MS }));
    const first = netRentals[0].agreement.provider.id;
    netRentals.push(await glm.oneOf({ order: vpnOrder((p) => p.provider.id !== first), signalOrTimeout: SIGN_MS }));
    netExes.push(...(await Promise.all(netRentals.map((r) => r.getExeUnit(60_000)))));
    const ips = netExes.map((e) => e.getIp());
    expectEqual(ips, ["192.168.7.2", "192.168.7.3"], "the instances' VPN addresses (exe.getIp())");
    const caps = netRentals.map((r) => r.agreement.model.offer.properties["golem.runtime.capabilities"]);
    if (!caps.every((c) => Array.isArray(c) && c.includes("vpn"))) throw new Error(`offers' capabilities ${JSON.stringify(caps)}`);
    const nodes = new Map((await netRaw("GET", `/${network.id}/nodes`)).map((n) => [n.id, n.ip]));
    for (const [i, r] of netRentals.entries()) {
      if (nodes.get(r.agreement.provider.id) !== ips[i]) throw new Error(`GET /net/{id}/nodes ${JSON.stringify([...nodes])} lacks ${ips[i]}`);
    }
    // what the runtime was told, as the instance sees it: its own address on its interface
    const seen = await checkResult(await netExes[0].run("python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((\"192.168.7.1\", 9)); print(s.getsockname()[0])'"), "own address");
    expectEqual(String(seen.stdout).trim(), ips[0], "the first instance's own address");
    return `${netExes.map((e, i) => `${e.provider.name} at ${ips[i]}`).join(", ")}`;
  }, netCreated ? undefined : "createNetwork failed");
  const noNetExes = netRented ? undefined : "network-oneOf failed";

  await flow("TcpProxy", 60_000, async () => {
    const [exe] = netExes;
    await checkResult(await exe.uploadData(new TextEncoder().encode(pageText), "/golem/www/index.html"), "uploadData index.html");
    await checkResult(await exe.run("/golem/run/start-server.sh"), "start-server.sh");
    const uri = exe.getWebsocketUri(80);
    const expected = `${API_URL.replace(/^http/, "ws").replace(/\/$/, "")}/net-api/v1/net/${network.id}/tcp/${exe.getIp()}/80`;
    expectEqual(uri, expected, "exe.getWebsocketUri(80)");
    const proxy = exe.createTcpProxy(80);
    const errors = [];
    proxy.events.on("error", (e) => errors.push(String(e)));
    await proxy.listen(0);
    // golem-js keeps its server private; port 0 asks the system for a free one, read back here
    const port = proxy.server.address().port;
    try {
      const bodies = [];
      for (const page of ["/", "/index.html"]) {
        const response = await fetch(`http://127.0.0.1:${port}${page}`);
        const body = await response.text();
        expectEqual([response.status, body], [200, pageText], `GET ${page} through the proxy`);
        bodies.push(body);
      }
      const missing = await fetch(`http://127.0.0.1:${port}/no-such-page`);
      await missing.text();
      expectEqual(missing.status, 404, "GET /no-such-page through the proxy");
    } finally {
      await proxy.close();
    }
    if (errors.length) throw new Error(`TcpProxy errors: ${errors.join("; ")}`);
    return `two pages and a 404 from ${exe.getIp()}:80 through 127.0.0.1:${port} (${uri.replace(API_URL.replace(/^http/, "ws"), "")})`;
  }, noNetExes);

  await flow("network-peer", 40_000, async () => {
    const [server, client] = netExes;
    const script = `import urllib.request; print(urllib.request.urlopen("http://${server.getIp()}/", timeout=10).read().decode())`;
    const r = await checkResult(await client.run(`python3 -c '${script}'`), "urlopen from the second instance");
    expectEqual(String(r.stdout).trim(), pageText, "the page as the second instance sees it");
    return `${client.getIp()} fetched http://${server.getIp()}/ inside the VPN`;
  }, noNetExes);

  // As golem-js's tcp-proxy example does it: the server runs in the foreground under runAndStream (the rental is
  // finalized while it still runs, in destroyNetwork), and 2 MB pass through the proxy intact.
  await flow("TcpProxy-runAndStream", 60_000, async () => {
    const [, exe] = netExes;
    const big = new Uint8Array(2 * 1024 * 1024).map((_, i) => (i * 31 + (i >> 11)) % 256);
    await checkResult(await exe.uploadData(big, "/golem/www/big.bin"), "uploadData big.bin");
    const server = await exe.runAndStream("python3 -u -m http.server 8080 --directory /golem/www");
    let said = "";
    const serving = new Promise((resolve) => {
      const look = (d) => {
        said += String(d);
        if (/Serving HTTP on .* port 8080/.test(said)) resolve();
      };
      server.stdout.subscribe(look);
      server.stderr.subscribe(look);
    });
    await withTimeout(serving, 15_000, `the server's "Serving HTTP" line (it said ${JSON.stringify(said)})`);
    const proxy = exe.createTcpProxy(8080);
    const errors = [];
    proxy.events.on("error", (e) => errors.push(String(e)));
    await proxy.listen(0);
    const port = proxy.server.address().port;
    try {
      const response = await fetch(`http://127.0.0.1:${port}/big.bin`);
      const body = new Uint8Array(await response.arrayBuffer());
      expectEqual(response.status, 200, "GET /big.bin status");
      if (body.length !== big.length || Buffer.compare(Buffer.from(body), Buffer.from(big)) !== 0)
        throw new Error(`GET /big.bin: ${body.length} bytes, not the ${big.length} uploaded`);
    } finally {
      await proxy.close();
    }
    if (errors.length) throw new Error(`TcpProxy errors: ${errors.join("; ")}`);
    if (server.isFinished()) throw new Error("the streamed server ended early");
    return `${big.length} bytes from the streamed server at ${exe.getIp()}:8080 through 127.0.0.1:${port}`;
  }, noNetExes);

  await flow("destroyNetwork", 90_000, async () => {
    const ids = netRentals.map((r) => r.agreement.id);
    await Promise.all(netRentals.map((r) => r.stopAndFinalize(60_000)));
    await watch.until(() => ids.every((id) => (watch.byAgreement.get(id) || {}).invoicesAccepted >= 1), 20_000,
      "the network rentals' invoices to be accepted");
    await glm.destroyNetwork(network);
    if (!network.isRemoved()) throw new Error("the network is not marked removed");
    const v1 = await netRaw("GET");
    const v2 = await (await fetch(`${API_URL}/net-api/v2/vpn/net`, { headers: { Authorization: `Bearer ${APP_KEY}` } })).json();
    expectEqual([v1, v2], [[], []], "GET /net-api/v1/net and /net-api/v2/vpn/net after destroyNetwork");
    return `${ids.length} rentals finalized and paid, network removed, no network listed`;
  }, netCreated ? undefined : "createNetwork failed");

  await flow("payments-summary", 30_000, async () => {
    // Every agreement of this GolemNetwork has its invoice accepted (the rentals were finalized), exactly once.
    const agreements = () => [...watch.byAgreement.values()];
    await watch.until(() => agreements().length > 0 && agreements().every((e) => e.invoicesAccepted >= 1), 20_000,
      "every agreement's invoice to be accepted");
    const entries = [...watch.byAgreement.entries()];
    const bad = entries.filter(([, e]) => e.invoicesAccepted !== 1);
    const s = watch.seen;
    const text = `${entries.length} agreement(s); debit notes received ${s.debitNotesReceived}/accepted ${s.debitNotesAccepted}; invoices received ${s.invoicesReceived}/accepted ${s.invoicesAccepted}`;
    if (!entries.length) throw new Error(`${text}: no agreement was paid`);
    // golem-js warns so when the node shows the requestor its own DebitNoteAccepted/Settled events (yagna does not)
    const duplicates = logLines.filter((l) => /received a duplicate/.test(l)).length;
    if (duplicates) throw new Error(`${text}; golem-js saw ${duplicates} duplicate debit note(s)/invoice(s)`);
    if (s.errors.length) throw new Error(`${text}; errors: ${s.errors.slice(0, 3).join("; ")}`);
    if (bad.length) throw new Error(`${text}; not accepted exactly once: ${bad.map(([id, e]) => `${id.slice(0, 8)}=${e.invoicesAccepted}`).join(", ")}`);
    return text;
  }, noConnection);

  // Raw REST checks of the payment event filters golem-js relies on (yagna 0.17.6, core/payment/src/api/invoices.rs
  // and debit_notes.rs, dao/*_event.rs): without X-Requestor-Events the requestor sees only RECEIVED and CANCELLED
  // events of its documents; ?appSessionId= keeps the documents whose agreement was confirmed with that session.
  await flow("probe-payment-events", 20_000, async () => {
    const since = new Date(started - 1000).toISOString();
    const get = async (query, headers = {}) => {
      const url = `${API_URL}/payment-api/v1/invoiceEvents?timeout=0&afterTimestamp=${encodeURIComponent(since)}&${query}`;
      const r = await fetch(url, { headers: { Authorization: `Bearer ${APP_KEY}`, ...headers } });
      if (!r.ok) throw new Error(`GET ${url} -> ${r.status} ${await r.text()}`);
      return (await r.json()).map((e) => e.eventType);
    };
    const session = glm.yagna.appSessionId;
    const mine = await get(`maxEvents=100&appSessionId=${session}`);
    const widened = await get(`maxEvents=100&appSessionId=${session}`, { "X-Requestor-Events": "RECEIVED,ACCEPTED,SETTLED" });
    const foreign = await get("maxEvents=100&appSessionId=no-such-session");
    const problems = [];
    if (!mine.length) problems.push("no events for our session");
    if (mine.some((t) => t !== "InvoiceReceivedEvent" && t !== "InvoiceCancelledEvent"))
      problems.push(`default (no X-Requestor-Events) gave ${[...new Set(mine)].join(",")}, yagna gives only Received/Cancelled`);
    if (!widened.includes("InvoiceAcceptedEvent"))
      problems.push(`X-Requestor-Events: RECEIVED,ACCEPTED,SETTLED gave ${[...new Set(widened)].join(",") || "nothing"}`);
    if (foreign.length) problems.push(`appSessionId=no-such-session gave ${foreign.length} event(s), yagna gives none`);
    if (problems.length) throw new Error(problems.join("; "));
    return `default ${mine.length} Received event(s); widened ${widened.length}; foreign session 0`;
  }, noConnection);

  await flow("disconnect", 60_000, async () => {
    await glm.disconnect();
    return "GolemNetwork.disconnect resolved";
  }, noConnection);

  // -- TaskExecutor: 5 tasks, at most 3 at once (3 providers) --------------------------------------------------------
  await flow("TaskExecutor", 240_000, async () => {
    const before = logLines.length;
    const executor = await TaskExecutor.create({
      api: { key: APP_KEY, url: API_URL },
      payment: PAYMENT,
      logger: makeLogger("task-executor"),
      ...order({ imageTag: IMAGE_TAG }),
      task: { maxParallelTasks: 3, taskTimeout: 120_000, maxTaskRetries: 1, taskStartupTimeout: SIGN_MS },
      startupTimeout: SIGN_MS,
      skipProcessSignals: true,
    });
    const providers = new Set();
    try {
      const outputs = await Promise.all(
        [1, 2, 3, 4, 5].map((i) =>
          executor.run(async (exe) => {
            providers.add(exe.provider.name);
            const r = await exe.run(`echo task-${i}; sleep 1`);
            return String(r.stdout).trim();
          }),
        ),
      );
      expectEqual(outputs, ["task-1", "task-2", "task-3", "task-4", "task-5"], "task outputs");
    } finally {
      await executor.shutdown();
    }
    const stats = executor.getStats();
    const duplicates = logLines.slice(before).filter((l) => /received a duplicate/.test(l)).length;
    if (duplicates) throw new Error(`golem-js saw ${duplicates} duplicate debit note(s)/invoice(s)`);
    if (stats.invoicesPaid !== stats.agreements)
      throw new Error(`agreements ${stats.agreements}, invoices paid ${stats.invoicesPaid}, unpaid ${stats.invoicesUnpaid}, missing ${stats.invoicesMissing}`);
    return `5 tasks on ${providers.size} provider(s) (${[...providers].sort().join(", ")}); stats ${JSON.stringify({ agreements: stats.agreements, invoicesPaid: stats.invoicesPaid, retries: stats.retries })}`;
  });

  const count = (s) => results.filter((r) => r.status === s).length;
  console.log(`# ${count("PASS")} passed, ${count("FAIL")} failed, ${count("SKIP")} skipped in ${elapsed().trim()}`);
  fs.rmSync(work, { recursive: true, force: true });
  return count("FAIL");
}

main().then(
  (failures) => process.exit(Math.min(failures, 100)),
  (err) => {
    console.log(`FAIL harness: ${describe(err)}`);
    process.exit(101);
  },
);
