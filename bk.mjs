import { caBench } from './dist/scripts/bench/ca.js';
import { backlogRow } from './dist/scripts/bench/enrollBacklog.js';
import { findMosquitto } from './dist/scripts/lib/local.js';
const ca = [{ name: "ca", value: 0, limit: "", perCpuSecond: 1 }];
console.log(ca[0].name, Math.round(ca[0].value), ca[0].limit);
const row = await backlogRow(findMosquitto(), ca[0].perCpuSecond, 2, 2);
console.log(row.name, Math.round(row.value), row.limit);
