namespace QubesFirewall.Engine.Model;

/// <summary>
/// The one place for each Qubes fact the planners and the audit both need, each following the Qubes source
/// named on it (core-admin 1ad5f9b8, core-agent-linux a37fac93, core-admin-addon-whonix f1380009,
/// mgmt-salt-dom0-virtual-machines 8941a8b0; see docs/qubes-facts.md). Nothing else in the engine answers
/// these questions.
/// </summary>
public static class QubesFacts
{
    /// <summary>
    /// Feature truth as qubesd has it: a feature value is a string and counts as true when it is not empty
    /// (Python's <c>bool(str)</c>). core-admin <c>qubes/ext/services.py</c> line 106 exports a service as
    /// <c>str(int(bool(value)))</c>, so <c>service.qubes-firewall=0</c> turns the service <b>on</b>; off is
    /// <c>''</c> (what <c>qvm-service --disable</c> stores). Absent: null, the caller's default.
    /// </summary>
    public static bool IsTrue(string? value) => !string.IsNullOrEmpty(value);

    /// <summary>
    /// The qube, its template, that template's template... (a disposable's template is its disposable
    /// template, an AppVM with a template of its own); each qube once, so a loop in a hand-edited root ends.
    /// core-admin <c>qubes/features.py</c> lines 169-175 walk the same chain (<c>subject = getattr(subject, attr)</c>).
    /// Names and features only: a qube of a class without a template (a TemplateVM, a StandaloneVM) ends the chain and is
    /// only glanced at (<see cref="QubesInventory.Glance"/>: its features, not its properties, which it would not use).
    /// </summary>
    public static IEnumerable<(string Name, IReadOnlyDictionary<string, string> Features)> TemplateChain(QubesInventory inventory, Qube qube)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal) { qube.Name };
        yield return (qube.Name, qube.Features);
        for (var next = qube.Template; next is not null && seen.Add(next);)
        {
            if (inventory.Glance(next) is not { } glance) yield break;
            if (glance.Class is not (QubeClass.AppVM or QubeClass.DispVM))
            {
                yield return (next, glance.Features);
                yield break;
            }
            var q = inventory.Get(next);
            yield return (q.Name, q.Features);
            next = q.Template;
        }
    }

    /// <summary>
    /// <c>features.check_with_template(name)</c>: the value of the first qube along the template chain that has
    /// the feature at all (an empty value on the qube itself wins over its template's <c>1</c>); null when none
    /// has it. core-admin <c>qubes/features.py</c> lines 193-198 and 169-175.
    /// </summary>
    public static string? CheckWithTemplate(QubesInventory inventory, Qube qube, string feature)
    {
        foreach (var q in TemplateChain(inventory, qube))
            if (q.Features.TryGetValue(feature, out var value)) return value;
        return null;
    }

    /// <summary>
    /// A qube's own setting of a Qubes service: on, off, or null when the qube has no <c>service.&lt;name&gt;</c>
    /// feature (the default of the qube's type applies). Only the qube's own features count: core-admin
    /// <c>qubes/ext/services.py</c> lines 86-90 iterate <c>vm.features.items()</c>, not the template's.
    /// </summary>
    public static bool? Service(Qube qube, string service) =>
        qube.Features.TryGetValue("service." + service, out var value) ? IsTrue(value) : null;

    /// <summary>
    /// Whether the qubes-firewall service runs in the qube: qubes that provide network have it on by default
    /// (core-agent-linux <c>vm-systemd/qubes-sysinit.sh</c> lines 9-10: in DEFAULT_ENABLED_NETVM and
    /// DEFAULT_ENABLED_PROXYVM), unless their own <c>service.qubes-firewall</c> is off (the empty string).
    /// </summary>
    public static bool RunsFirewallService(Qube qube) => qube.ProvidesNetwork && Service(qube, "qubes-firewall") != false;

    /// <summary>
    /// What the qube's agent reports about qubes-firewall.service: core-agent-linux
    /// <c>qubes-rpc/post-install.d/10-qubes-core-agent-features.sh</c> lines 94-98 request <c>qubes-firewall=1</c> or
    /// <c>=0</c>; core-admin <c>qubes/ext/core_features.py</c> lines 91-100 store it as a bool (<c>'1'</c> or
    /// <c>''</c>), read with <c>check_with_template</c> (<c>qubes/ext/r3compatibility.py</c> line 82). Null: not reported.
    /// </summary>
    public static bool? AgentHasFirewallService(QubesInventory inventory, Qube qube) =>
        CheckWithTemplate(inventory, qube, "qubes-firewall") is { } value ? IsTrue(value) : null;

    /// <summary>
    /// A Whonix gateway: core-admin-addon-whonix <c>qubeswhonix/__init__.py</c> lines 187-188 and 261-263 tag
    /// every qube whose <c>check_with_template("whonix-gw")</c> is true with <c>anon-gateway</c>; the template gets
    /// the feature from its own request (lines 246-247) or from Qubes' salt (mgmt-salt-dom0-virtual-machines
    /// <c>qvm/template-whonix-gateway.sls</c> lines 26-29). So: the tag, or the feature along the template chain,
    /// true as any feature is (non-empty). Template names decide nothing.
    /// </summary>
    public static bool IsWhonixGateway(QubesInventory inventory, Qube qube) =>
        qube.Tags.Contains("anon-gateway", StringComparer.Ordinal) || IsTrue(CheckWithTemplate(inventory, qube, "whonix-gw"));

    /// <summary>
    /// A disposable: class DispVM (core-admin <c>qubes/vm/dispvm.py</c> line 118). Its volumes do not keep
    /// changes (save_on_stop off, same class docstring), so its /rw is a fresh copy of its disposable template's
    /// private volume at each start: a hook file for it lives in that template.
    /// </summary>
    public static bool IsDisposable(Qube qube) => qube.Class == QubeClass.DispVM;

    /// <summary>
    /// The qube whose /rw holds the files of <paramref name="qube"/>: itself, or for a disposable its
    /// disposable template (its <c>template</c> property, core-admin <c>qubes/vm/dispvm.py</c> line 250).
    /// </summary>
    public static Qube StorageOf(QubesInventory inventory, Qube qube) =>
        IsDisposable(qube) && qube.Template is { } t && inventory.Find(t) is { } template ? template : qube;
}
