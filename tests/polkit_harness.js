// Evaluates a polkit .rules file outside polkitd (tests/hotkey_test.cpp):
//   node polkit_harness.js RULES.rules CASES.json
// CASES is [{"id": ACTION_ID, "unit": U, "verb": V, "groups": [G...]}, ...];
// prints one line per case: "yes", "no", "auth_admin", ... or "not_handled".
// The stub `polkit` object is the part of polkitd's JavaScript API the rule
// uses: addRule, Result, log; `action.lookup(key)` and `subject.isInGroup`.
"use strict";
const fs = require("fs");
const vm = require("vm");

const rules = [];
const polkit = {
  Result: {
    NO: "no",
    YES: "yes",
    AUTH_SELF: "auth_self",
    AUTH_SELF_KEEP: "auth_self_keep",
    AUTH_ADMIN: "auth_admin",
    AUTH_ADMIN_KEEP: "auth_admin_keep",
    NOT_HANDLED: null,
  },
  addRule(fn) { rules.push(fn); },
  addAdminRule() {},
  log() {},
  spawn() { throw new Error("rules must not spawn programs"); },
};
vm.runInNewContext(fs.readFileSync(process.argv[2], "utf8"), { polkit }, { filename: process.argv[2] });

for (const c of JSON.parse(fs.readFileSync(process.argv[3], "utf8"))) {
  const details = { unit: c.unit, verb: c.verb };
  const action = { id: c.id, lookup: (k) => details[k] };
  const subject = {
    user: "desk", local: true, active: true,
    isInGroup: (g) => c.groups.includes(g),
    isInNetGroup: () => false,
  };
  let result = null;
  for (const rule of rules) {
    result = rule(action, subject);
    if (result !== null && result !== undefined) break;
  }
  console.log(result === null || result === undefined ? "not_handled" : result);
}
