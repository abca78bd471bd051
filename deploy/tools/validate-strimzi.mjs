// Validates Strimzi custom resources with the validators that @kubernetes-models/strimzi-kafka-operator
// generates from Strimzi's CRD openAPIV3Schemas (installed by deploy/tools/install-k8s-tools.sh).
//   node deploy/tools/validate-strimzi.mjs <tools-dir>/npm < objects.json
// stdin: a JSON array of objects; stdout: a JSON array of {kind, name, apiVersion, ok, error}.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const root = join(process.argv[2], "node_modules", "@kubernetes-models", "strimzi-kafka-operator");
const objects = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const obj of objects) {
  const [group, version] = String(obj.apiVersion).split("/");
  const name = obj.metadata?.name;
  let ok = false, error = null;
  try {
    const mod = await import(pathToFileURL(join(root, group, version, `${obj.kind}.js`)).href);
    const { apiVersion, kind, ...data } = obj;
    new mod[obj.kind](data).validate();
    ok = true;
  } catch (e) {
    error = e.code === "ERR_MODULE_NOT_FOUND" ? `no schema for ${obj.apiVersion} ${obj.kind}` : e.message;
  }
  results.push({ kind: obj.kind, name, apiVersion: obj.apiVersion, ok, error });
}
process.stdout.write(JSON.stringify(results));
