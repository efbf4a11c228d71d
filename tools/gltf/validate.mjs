#!/usr/bin/env node
// Validate a glTF 2.0 asset (GLB or .gltf) with the Khronos glTF validator.
//
// usage: node tools/gltf/validate.mjs FILE [--json] [--strict]
//   prints a short summary (or, with --json, the full validator report as JSON on stdout);
//   exits 1 when the report has any error (with --strict: any error or warning), 2 on a usage/IO failure.
// Install once with `cd tools/gltf && npm install` (pins gltf-validator in package.json / package-lock.json).
import fs from "node:fs";
import path from "node:path";
import validator from "gltf-validator";

const args = process.argv.slice(2);
const file = args.find((a) => !a.startsWith("--"));
const asJson = args.includes("--json");
const strict = args.includes("--strict");
if (!file) {
  console.error("usage: node validate.mjs FILE [--json] [--strict]");
  process.exit(2);
}

const fullpath = path.resolve(file);
let bytes;
try {
  bytes = new Uint8Array(fs.readFileSync(fullpath));
} catch (err) {
  console.error(`cannot read ${fullpath}: ${err}`);
  process.exit(2);
}

// External buffers/images of a .gltf are resolved next to the file (a GLB normally has none).
const externalResourceFunction = (uri) =>
  new Promise((resolve, reject) => {
    fs.readFile(path.resolve(path.dirname(fullpath), decodeURIComponent(uri)), (err, data) =>
      err ? reject(err.toString()) : resolve(new Uint8Array(data)),
    );
  });

let report;
try {
  report = await validator.validateBytes(bytes, {
    uri: path.basename(fullpath),
    maxIssues: 0, // 0 = no limit
    externalResourceFunction,
  });
} catch (err) {
  console.error(`validator could not read ${fullpath}: ${err}`);
  process.exit(2);
}

const issues = report.issues;
if (asJson) {
  console.log(JSON.stringify(report, null, 2));
} else {
  console.log(
    `${fullpath}: ${issues.numErrors} errors, ${issues.numWarnings} warnings, ` +
      `${issues.numInfos} infos, ${issues.numHints} hints (validator ${report.validatorVersion})`,
  );
  const severity = ["ERROR", "WARNING", "INFO", "HINT"];
  for (const m of issues.messages) {
    console.log(`  ${severity[m.severity]} ${m.code} ${m.pointer ?? ""}: ${m.message}`);
  }
}
const failed = issues.numErrors > 0 || (strict && issues.numWarnings > 0);
process.exit(failed ? 1 : 0);
