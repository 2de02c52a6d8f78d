using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.Engine.Network;

/// <summary>Builds the network picture: one <see cref="QubeNetworkNode"/> per qube but dom0, in tree order.</summary>
public static class NetworkView
{
    /// <summary>
    /// Every qube but dom0, in tree order: each top qube (one that has no netvm, or whose netvm is missing) then
    /// its clients, depth first, by name. Reads each qube's rules once (through the audit's context, whose findings
    /// give <see cref="QubeNetworkNode.Problems"/>); nothing inside qubes is read.
    /// </summary>
    public static IReadOnlyList<QubeNetworkNode> Build(AuditContext context)
    {
        var inventory = context.Inventory;
        var forwards = PortForwardPlanner.List(inventory, context.Now).Where(f => f.IsValid).ToList();
        var links = InterVmLinkPlanner.DeclaredLinks(inventory);
        var bindings = TcpBindingDeclaration.ReadAll(inventory).Where(d => d.Binding is not null).Select(d => d.Binding!).ToList();
        var nodes = new List<QubeNetworkNode>();
        foreach (var qube in TreeOrder(inventory))
        {
            var chain = inventory.UpstreamOf(qube.Name).Select(q => q.Name).ToArray();
            if (qube.NetVM is not null && chain.Length == 0) chain = [qube.NetVM]; // a netvm that does not exist
            // who enforces its rules: the audit's own answer, from the one place that decides it
            string? enforcedBy = null, enforcement = null;
            if (qube.NetVM is not null)
            {
                var who = Enforcement.Of(inventory, qube);
                enforcedBy = who.Enforced ? who.NetVM : null;
                enforcement = who.Enforced ? $"enforced in {who.NetVM}"
                    : who.NetVmExists ? $"not enforced: {Enforcement.OfNetVm(inventory, inventory.Get(who.NetVM!)).Reason}"
                    : $"not enforced: its netvm '{who.NetVM}' does not exist";
            }
            IReadOnlyList<FirewallRule> rules = [];
            AuditFinding[] problems;
            try
            {
                rules = context.VisibleRules(qube.Name).Select(r => r.Rule).ToList();
                problems = FirewallAudit.Audit(context, qube).Where(f => f.Severity is AuditSeverity.Error or AuditSeverity.Warning).ToArray();
            }
            catch (QubesFirewallException ex)
            {
                problems = [new AuditFinding(AuditSeverity.Error, qube.Name, AuditChecks.UnreadableFirewall, null, ex.Message, null)];
            }
            var catchAll = FirewallEdit.FinalCatchAllIndex(rules);
            nodes.Add(new QubeNetworkNode
            {
                Name = qube.Name,
                Class = qube.Class,
                State = qube.State,
                Label = qube.Label,
                NetVM = qube.NetVM,
                NetVmChain = chain,
                ProvidesNetwork = qube.ProvidesNetwork,
                Clients = inventory.ClientsOf(qube.Name).Select(c => c.Name).Order(StringComparer.Ordinal).ToArray(),
                IP = qube.IP,
                IPv6 = qube.IPv6,
                EnforcedBy = enforcedBy,
                Enforcement = enforcement,
                RuleCount = rules.Count,
                CatchAll = catchAll < 0 ? null : RuleText.Format(rules[catchAll] with { Comment = null, Expire = null }),
                OpenToAll = FirewallAudit.RestrictsNothing(rules),
                Forwards = forwards.Where(f => f.VMName == qube.Name || f.Hops.Contains(qube.Name)).ToArray(),
                Links = links.Where(l => l.From == qube.Name || l.To == qube.Name).ToArray(),
                Bindings = bindings.Where(b => b.From == qube.Name || b.To == qube.Name).ToArray(),
                Problems = problems,
            });
        }
        return nodes;
    }

    /// <summary>Top qubes (no netvm, or a netvm that is missing or part of a loop) by name, each followed by its clients, depth first.</summary>
    public static IReadOnlyList<Qube> TreeOrder(QubesInventory inventory)
    {
        var qubes = inventory.Qubes.Where(q => q.Class != QubeClass.AdminVM).OrderBy(q => q.Name, StringComparer.Ordinal).ToList();
        var result = new List<Qube>();
        var placed = new HashSet<string>(StringComparer.Ordinal);
        void Walk(Qube q)
        {
            if (!placed.Add(q.Name)) return;
            result.Add(q);
            foreach (var c in qubes.Where(c => c.NetVM == q.Name)) Walk(c);
        }
        // networked trees first (sys-net), then qubes without network
        foreach (var top in qubes.Where(q => q.NetVM is null && q.ProvidesNetwork)) Walk(top);
        foreach (var top in qubes.Where(q => q.NetVM is not null && inventory.Find(q.NetVM) is null)) Walk(top);
        foreach (var top in qubes.Where(q => q.NetVM is null && !q.ProvidesNetwork)) Walk(top);
        foreach (var rest in qubes) Walk(rest); // loops
        return result;
    }
}
