using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Engine.Planning;
using QubesFirewall.Lab.Tests.Lab;

namespace QubesFirewall.Lab.Tests;

/// <summary>
/// What Test-QubeFirewall's leftover finding means on real netfilter: a hop whose hook file still holds the managed block an
/// earlier version wrote; the audit names it with the fix (installing the agent there, which removes the block), and after
/// the fix the forward comes back across the hop's restart from its agent keys alone.
/// </summary>
[Collection(LabCollection.Name)]
public sealed class ForwardAuditLabTests : IDisposable
{
    private const string SysNetLan = "192.168.1.10";

    private readonly LabTopology _lab;
    private readonly PortForwardLab _pf;

    public ForwardAuditLabTests(LabTopology lab)
    {
        _lab = lab;
        _lab.Reset();
        _pf = new PortForwardLab(lab);
    }

    public void Dispose() => _pf.Dispose();

    private List<AuditFinding> Audit(string qube)
    {
        var inventory = _pf.Backend.GetInventory();
        var context = new AuditContext(inventory, _pf.Backend.GetFirewall, _pf.Now, _pf.Backend.ReadQubeFile);
        return FirewallAudit.Audit(context, inventory.Get(qube)).Where(f => f.Check.StartsWith("Forward", StringComparison.Ordinal)).ToList();
    }

    [Fact]
    public void A_leftover_block_found_by_the_audit_is_removed_by_its_fix_and_the_forward_then_lives_on_its_agent_keys_alone()
    {
        using var server = _lab.StartServer("work", 8080);
        var forward = PortForward.Create("work", ForwardProtocol.Tcp, 8443, 8080, allowFrom: ["192.168.1.0/24"]);
        _pf.Add(forward);
        Assert.Equal("work", _lab.Connect("outside", SysNetLan, 8443).ServerNode);
        Assert.Empty(Audit("work"));

        // sys-firewall's hook file holds what an earlier version kept there (the same forward's rules), in dom0's view and in the qube
        var script = PortForwardPlanner.Export(_pf.Backend.GetInventory(), "sys-firewall")!;
        var content = ManagedBlock.Upsert("#!/bin/sh\n", script.Script);
        _pf.Backend.WriteQubeFile("sys-firewall", HookFiles.FirewallUserScript, content, ManagedBlock.FileMode);
        _lab.WriteRwConfig("sys-firewall", "qubes-firewall-user-script", content, executable: true);

        var finding = Assert.Single(Audit("work"));
        Assert.Equal((AuditSeverity.Error, ForwardAuditChecks.UndeclaredPart), (finding.Severity, finding.Check));
        Assert.StartsWith("sys-firewall:/rw/config/qubes-firewall-user-script holds port forward rules for tcp/8443 to 'work'", finding.Message);
        Assert.Equal("Install-QubeFirewallAgent -VMName sys-firewall", finding.Fix);

        Engine.Agent.AgentInstaller.Install(_pf.Backend, "sys-firewall"); // the fix: the block goes, the user's lines stay
        var migrated = _pf.Backend.ReadQubeFile("sys-firewall", HookFiles.FirewallUserScript)!;
        Assert.Equal("#!/bin/sh\n", migrated);
        _lab.WriteRwConfig("sys-firewall", "qubes-firewall-user-script", migrated, executable: true);
        Assert.Empty(Audit("work"));

        Assert.All(_pf.Restart("sys-firewall"), run => run.EnsureSuccess("hooks in sys-firewall")); // from its features alone
        Assert.Equal("work", _lab.Connect("outside", SysNetLan, 8443).ServerNode);
        _pf.Remove("work", ForwardProtocol.Tcp, 8443);
        Assert.False(_lab.Connect("outside", SysNetLan, 8443, LabProtocol.Tcp, TimeSpan.FromMilliseconds(400)).Connected);
    }
}
