// Tidelog console: #/security — users (SCRAM mechanisms, never a secret), ACLs and client quotas,
// read-only from GET /api/v1/users, /acls and /quotas (DESCRIBE on the cluster when ACLs are on).
// Changes go through Kafka's APIs: `tidelog users|acls`, kafka-acls, kafka-client-quotas.
"use strict";

async function securityPage() {
  const body = h("div", {}, "Loading…");
  view.replaceChildren(h("h1", {}, "Security"), body);
  every(5000, async () => {
    try {
      const [users, acls, quotas] = await Promise.all([api("GET", "/users"), api("GET", "/acls"), api("GET", "/quotas")]);
      const entity = e => Object.entries(e).map(([type, name]) => h("span", { class: "tag" }, `${type}: ${name ?? "<default>"}`));
      body.replaceChildren(
        h("div", { class: "cards" },
          card("ACLs", acls.enabled ? "on" : "off", "acls-enabled"),
          card("Bindings", fmtNum(acls.acls.length), "acl-count"),
          card("Users", fmtNum(users.users.length), "user-count"),
          card("Quotas", fmtNum(quotas.quotas.length), "quota-count")),
        h("h2", {}, "Users"),
        h("p", { class: "muted" }, `SASL mechanisms: ${users.sasl_mechanisms.join(", ") || "none"}` +
          (users.plain_users_file ? " · PLAIN users also come from sasl.plain.users.file" : "")),
        table([
          { label: "User", render: u => h("code", {}, u.name) },
          { label: "SCRAM mechanisms", render: u => u.mechanisms.map(m => h("span", { class: "tag" }, `${m.mechanism} (${fmtNum(m.iterations)} iterations)`)) },
        ], users.users, { testid: "users-table", key: u => u.name, empty: "No SCRAM users." }),
        h("h2", {}, "ACLs"),
        h("p", { class: "muted" }, acls.enabled
          ? `Super users: ${acls.super_users.join(", ") || "none"} · a resource without ACLs is ${acls.allow_everyone_if_no_acl_found ? "open to all" : "denied"}`
          : "No authorizer (authorizer.class.name is empty): ACLs are stored but not checked."),
        table([
          { label: "Principal", render: a => h("code", {}, a.principal) },
          { label: "Permission", render: a => h("span", { class: "tag" }, a.permission_type) },
          { label: "Operation", key: "operation" },
          { label: "Resource", render: a => `${a.resource_type}:${a.pattern_type}:${a.name}` },
          { label: "Host", key: "host" },
        ], acls.acls, { testid: "acls-table", key: a => `${a.principal} ${a.operation} ${a.resource_type}:${a.name}`, empty: "No ACLs." }),
        h("h2", {}, "Client quotas"),
        table([
          { label: "Entity", render: q => entity(q.entity) },
          { label: "Quotas", render: q => Object.entries(q.values).map(([k, v]) => h("span", { class: "tag" }, `${k}: ${fmtNum(v)}`)) },
        ], quotas.quotas, { testid: "quotas-table", empty: "No client quotas." }));
    } catch (e) { body.replaceChildren(errorBox(e)); }
  });
}

registerPage("security", () => ["security", securityPage()]);
