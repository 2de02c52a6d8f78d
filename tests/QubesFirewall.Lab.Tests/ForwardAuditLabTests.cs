using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Engine.Planning;
using QubesFirewall.Lab.Tests.Lab;

namespace QubesFirewall.Lab.Tests;

/// <summary>
/// What Test-QubeFirewall's "missing part" finding means on real netfilter: a hop whose hook file lost the
/// forward serves it until it restarts, then the forward is dead; the audit says so beforehand, and its fix
/// (re-applying the declaration) brings it back, across a restart too.
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
    public void A_missing_part_found_by_the_audit_is_a_forward_that_dies_at_the_hops_restart_and_the_fix_restores_it()
    {
        using var server = _lab.StartServer("work", 8080);
        var forward = PortForward.Create("work", ForwardProtocol.Tcp, 8443, 8080, allowFrom: ["192.168.1.0/24"]);
        _pf.Add(forward);
        Assert.Equal("work", _lab.Connect("outside", SysNetLan, 8443).ServerNode);
        Assert.Empty(Audit("work"));

        // sys-firewall's hook file loses the block (a restored backup, say), in dom0's view and in the qube
        var content = _pf.Backend.ReadQubeFile("sys-firewall", ForwardPersistence.FirewallUserScript)!;
        var without = ManagedBlock.Remove(content)!;
        _pf.Backend.WriteQubeFile("sys-firewall", ForwardPersistence.FirewallUserScript, without, ManagedBlock.FileMode);
        _lab.WriteRwConfig("sys-firewall", "qubes-firewall-user-script", without, executable: true);
        Assert.Equal("work", _lab.Connect("outside", SysNetLan, 8443).ServerNode); // still loaded...

        var finding = Assert.Single(Audit("work"));
        Assert.Equal((AuditSeverity.Error, ForwardAuditChecks.MissingPart), (finding.Severity, finding.Check));
        Assert.Contains("sys-firewall:/rw/config/qubes-firewall-user-script does not hold its part", finding.Message);

        _lab.Reboot("sys-firewall"); // ...until sys-firewall starts again
        Assert.False(_lab.Connect("outside", SysNetLan, 8443, LabProtocol.Tcp, TimeSpan.FromMilliseconds(400)).Connected);

        _pf.Add(forward); // the finding's fix: the same declaration again
        Assert.Empty(Audit("work"));
        Assert.Equal("work", _lab.Connect("outside", SysNetLan, 8443).ServerNode);
        _lab.Reboot("sys-firewall");
        Assert.Equal("work", _lab.Connect("outside", SysNetLan, 8443).ServerNode);
        _pf.Remove("work", ForwardProtocol.Tcp, 8443);
    }
}
