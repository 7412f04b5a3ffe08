#!/usr/bin/env node
// Validates rendered manifests (kubectl kustomize output): every object
// against its Kubernetes 1.27 schema (kubernetes-models 4.x: types, required
// fields, kinds), then what schemas cannot: selectors match the pod labels,
// Service and probe ports match the mod-server config in the ConfigMap, the
// termination grace period exceeds the drain grace plus the preStop pause,
// the HPA targets the Deployment (which leaves replicas to it), the thread
// counts fit the pod's CPUs, and the request log goes to stderr.
//   node validate.js RENDERED.yaml
'use strict';
const fs = require('fs');
const yaml = require('js-yaml');

const models = {
  'apps/v1/Deployment': () => require('kubernetes-models/apps/v1').Deployment,
  'v1/Service': () => require('kubernetes-models/v1').Service,
  'v1/ConfigMap': () => require('kubernetes-models/v1').ConfigMap,
  'policy/v1/PodDisruptionBudget': () => require('kubernetes-models/policy/v1').PodDisruptionBudget,
  'autoscaling/v2/HorizontalPodAutoscaler': () => require('kubernetes-models/autoscaling/v2').HorizontalPodAutoscaler,
  'monitoring.coreos.com/v1/ServiceMonitor': () => require('@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1').ServiceMonitor,
};

const file = process.argv[2];
const docs = yaml.loadAll(fs.readFileSync(file, 'utf8')).filter(Boolean);
const problems = [];
const fail = (msg) => problems.push(msg);

for (const obj of docs) {
  const key = `${obj.apiVersion}/${obj.kind}`;
  const model = models[key];
  if (!model) { fail(`${key} ${obj.metadata && obj.metadata.name}: no schema for this kind`); continue; }
  try {
    new (model())(obj).validate();
  } catch (e) {
    fail(`${key} ${obj.metadata.name}: ${e.message}`);
  }
}

const byKind = (kind) => docs.filter((d) => d.kind === kind);
const matches = (selector, labels) => Object.entries(selector || {}).every(([k, v]) => labels[k] === v);
const [deploy] = byKind('Deployment');
const [configMap] = byKind('ConfigMap');
if (!deploy || !configMap) {
  fail('expected a Deployment and a ConfigMap');
} else {
  const pod = deploy.spec.template;
  const podLabels = pod.metadata.labels || {};
  if (!matches(deploy.spec.selector.matchLabels, podLabels)) fail('Deployment selector does not match its pod labels');
  for (const s of byKind('Service')) {
    if (!matches(s.spec.selector, podLabels)) fail(`Service ${s.metadata.name}: selector does not match the pod labels`);
  }
  for (const p of byKind('PodDisruptionBudget')) {
    if (!matches(p.spec.selector.matchLabels, podLabels)) fail(`PDB ${p.metadata.name}: selector does not match the pod labels`);
  }
  for (const h of byKind('HorizontalPodAutoscaler')) {
    const t = h.spec.scaleTargetRef;
    if (t.kind !== 'Deployment' || t.name !== deploy.metadata.name) fail(`HPA ${h.metadata.name}: does not target the Deployment`);
    // The HPA owns the replica count: one in the Deployment resets it on every apply.
    if (deploy.spec.replicas !== undefined) fail(`Deployment sets replicas (${deploy.spec.replicas}) though HPA ${h.metadata.name} scales it`);
  }
  for (const m of byKind('ServiceMonitor')) {
    const targets = byKind('Service').filter((s) => matches(m.spec.selector.matchLabels, s.metadata.labels || {}));
    const portNames = new Set(targets.flatMap((s) => s.spec.ports.map((p) => p.name)));
    for (const e of m.spec.endpoints) {
      if (!portNames.has(e.port)) fail(`ServiceMonitor ${m.metadata.name}: no selected Service has port "${e.port}"`);
    }
  }

  // The mod-server config the pods mount.
  const volume = pod.spec.volumes.find((v) => v.configMap && v.configMap.name === configMap.metadata.name);
  if (!volume) fail(`no volume mounts ConfigMap ${configMap.metadata.name}`);
  const container = pod.spec.containers[0];
  const mount = container.volumeMounts.find((m) => volume && m.name === volume.name);
  const argConfig = container.args[container.args.indexOf('--config') + 1];
  const fileName = Object.keys(configMap.data)[0];
  if (!mount || argConfig !== `${mount.mountPath}/${fileName}`) fail(`--config ${argConfig} is not the mounted ConfigMap file`);
  const cfg = yaml.load(configMap.data[fileName]);
  const portOf = (addr) => Number(String(addr).split(':').pop());
  const grpcPort = portOf(cfg.listen);
  const metricsPort = portOf(cfg.metrics_listen);
  if (!String(cfg.listen).startsWith('0.0.0.0:')) fail(`config listen ${cfg.listen} is not reachable from outside the pod`);
  const named = Object.fromEntries(container.ports.map((p) => [p.name, p.containerPort]));
  if (named.grpc !== grpcPort) fail(`container port grpc ${named.grpc} != config listen port ${grpcPort}`);
  if (named.metrics !== metricsPort) fail(`container port metrics ${named.metrics} != config metrics port ${metricsPort}`);
  for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
    const p = container[probe];
    if (!p || !p.grpc) fail(`${probe} is not a gRPC health probe`);
    else if (p.grpc.port !== grpcPort) fail(`${probe} port ${p.grpc.port} != gRPC port ${grpcPort}`);
  }
  for (const s of byKind('Service')) {
    for (const p of s.spec.ports) {
      const target = typeof p.targetPort === 'string' ? named[p.targetPort] : p.targetPort;
      if (target === undefined) fail(`Service ${s.metadata.name} port ${p.name}: target ${p.targetPort} is no container port`);
    }
  }
  // Thread counts sized to the pod's CPUs, not the node's (0 means one per
  // hardware thread the node has), and the request log on for kubectl logs.
  const cpuOf = (q) => (q === undefined ? undefined : String(q).endsWith('m') ? Number(String(q).slice(0, -1)) / 1000 : Number(q));
  const res = container.resources || {};
  const cpus = cpuOf((res.limits || {}).cpu) || cpuOf((res.requests || {}).cpu);
  if (!cpus) fail('the container requests no CPU');
  for (const key of ['threads', 'torch_threads']) {
    const n = cfg[key];
    if (!(Number.isInteger(n) && n >= 1 && n <= Math.ceil(cpus))) fail(`config ${key} ${n} must be 1 .. the pod's ${cpus} CPUs (0 would follow the node's cores)`);
  }
  if (cfg.request_log !== 'stderr') fail(`config request_log ${cfg.request_log} is not stderr (kubectl logs reads it)`);
  const pause = container.lifecycle && container.lifecycle.preStop && container.lifecycle.preStop.exec
    ? Number(container.lifecycle.preStop.exec.command[1]) : 0;
  const grace = pod.spec.terminationGracePeriodSeconds;
  const drain = cfg.drain_grace_seconds === undefined ? 30 : cfg.drain_grace_seconds;
  if (!(grace > drain + pause)) fail(`terminationGracePeriodSeconds ${grace} must exceed drain grace ${drain} + preStop ${pause}`);
  if (!pause) fail('no preStop pause');
}

for (const p of problems) console.log(`FAIL: ${p}`);
console.log(`${file}: ${docs.length} objects, ${problems.length} problems`);
process.exit(problems.length ? 1 : 0);
