// Writes a TypeScript file that declares every object of a rendered manifest
// as a constant of its kubernetes-models interface, so tsc's excess-property
// check rejects unknown fields (the schema validators accept them).
'use strict';
const fs = require('fs');
const yaml = require('js-yaml');
const types = {
  'apps/v1/Deployment': ['kubernetes-models/apps/v1/Deployment', 'IDeployment'],
  'v1/Service': ['kubernetes-models/v1/Service', 'IService'],
  'v1/ConfigMap': ['kubernetes-models/v1/ConfigMap', 'IConfigMap'],
  'policy/v1/PodDisruptionBudget': ['kubernetes-models/policy/v1/PodDisruptionBudget', 'IPodDisruptionBudget'],
  'autoscaling/v2/HorizontalPodAutoscaler': ['kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler', 'IHorizontalPodAutoscaler'],
  'monitoring.coreos.com/v1/ServiceMonitor': ['@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor', 'IServiceMonitor'],
};
const [input, output] = process.argv.slice(2);
const docs = yaml.loadAll(fs.readFileSync(input, 'utf8')).filter(Boolean);
const lines = [];
const imports = new Set();
docs.forEach((obj, i) => {
  const t = types[`${obj.apiVersion}/${obj.kind}`];
  if (!t) throw new Error(`no type for ${obj.apiVersion}/${obj.kind}`);
  imports.add(`import { ${t[1]} } from '${t[0]}';`);
  lines.push(`// ${obj.kind} ${obj.metadata.name}\nexport const object${i}: ${t[1]} = ${JSON.stringify(obj, null, 2)};`);
});
fs.writeFileSync(output, [...imports, ...lines].join('\n') + '\n');
