using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// Test-QubeFirewall's port forward checks and IPv6 forwards through a hosted runspace on a copy of the sample
/// (where sys-firewall is a disposable of default-dvm, and the qubes on the way record the agent): findings come out as
/// objects, and a fix they suggest runs as a script and clears them.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class ForwardAuditCmdletTests : IDisposable
{
    private readonly SampleRootCopy _root = new();

    public void Dispose() => _root.Dispose();

    private PsRun Run(string script, IDictionary<string, object?>? variables = null)
    {
        var vars = new Dictionary<string, object?>(variables ?? new Dictionary<string, object?>()) { ["QubesRoot"] = _root.Path };
        return PowerShellHost.Run("$PSDefaultParameterValues = @{ '*-Qube*:Root' = $QubesRoot }\n" + script, variables: vars);
    }

    // -Deep: the leftovers of earlier versions are in the qubes' hook files, read only when asked
    private List<AuditFinding> ForwardFindings(string qube, bool deep = false) =>
        Run($"Test-QubeFirewall {qube}{(deep ? " -Deep" : "")}").Of<AuditFinding>().Where(f => f.Check.StartsWith("Forward", StringComparison.Ordinal)).ToList();

    [Fact]
    public void A_forward_through_the_disposable_sys_firewall_needs_no_Force_and_has_no_finding()
    {
        Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24").AssertNoErrors();
        Assert.Empty(ForwardFindings("work"));
        Assert.Empty(Run("Test-QubeFirewall | Where-Object Check -like 'Forward*'").Of<AuditFinding>());
    }

    [Fact]
    public void Custom_persist_on_a_hop_is_reported()
    {
        Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24").AssertNoErrors();
        using (var backend = new OfflineRoot(_root.Path)) backend.SetFeature("sys-net", "service.custom-persist", "1");
        var f = Assert.Single(ForwardFindings("work"), x => x.Check == ForwardAuditChecks.CustomPersistHop);
        Assert.Equal(AuditSeverity.Warning, f.Severity);
        Assert.Null(f.Fix); // qvm-service is no command of this module: the message says it
        Assert.Contains("qvm-service --disable sys-net custom-persist", f.Message);
    }

    /// <summary>The managed block an earlier version kept for the qube (written as Export-QubeFirewallScript renders it).</summary>
    private void WriteEarlierVersionBlock(string qube)
    {
        using var backend = new OfflineRoot(_root.Path);
        var script = PortForwardPlanner.Export(backend.GetInventory(), qube)!;
        backend.WriteQubeFile(script.StoredIn, script.Path, ManagedBlock.Upsert("#!/bin/sh\n# mine\n", script.Script), ManagedBlock.FileMode);
    }

    [Fact]
    public void Rules_an_earlier_version_left_are_an_error_whose_fix_run_as_a_script_removes_them_and_keeps_the_users_lines()
    {
        Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24").AssertNoErrors();
        WriteEarlierVersionBlock("sys-net");
        var file = Path.Combine(_root.Path, "qubesfirewall-state", "sys-net", "rw", "config", "qubes-firewall-user-script");

        var leftover = Assert.Single(ForwardFindings("work", deep: true), x => x.Check == ForwardAuditChecks.UndeclaredPart);
        Assert.Equal(AuditSeverity.Error, leftover.Severity);
        Assert.StartsWith("sys-net:/rw/config/qubes-firewall-user-script holds port forward rules for tcp/443 to 'work'", leftover.Message);
        var fix = leftover.Fix!; // the command alone: the explanation is in the message
        Assert.Equal("Install-QubeFirewallAgent -VMName sys-net", fix);

        Run("& ([scriptblock]::Create($fix))", new Dictionary<string, object?> { ["fix"] = fix }).AssertNoErrors();
        Assert.DoesNotContain(ForwardFindings("work", deep: true), x => x.Check == ForwardAuditChecks.UndeclaredPart);
        Assert.Equal("#!/bin/sh\n# mine\n", File.ReadAllText(file));
        Assert.Single(Run("Get-QubePortForward").Of<QubePortForward>()); // the forward itself stays
    }

    [Fact]
    public void Rules_left_without_a_declaration_say_so_and_the_fix_opens_nothing()
    {
        Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24").AssertNoErrors();
        WriteEarlierVersionBlock("sys-net");
        WriteEarlierVersionBlock("sys-firewall");
        Run("Remove-QubePortForward work 443 -Confirm:$false").AssertNoErrors();
        var leftovers = ForwardFindings("work", deep: true).Where(x => x.Check == ForwardAuditChecks.UndeclaredPart).ToList();
        Assert.Equal(2, leftovers.Count); // sys-net and sys-firewall (kept in default-dvm)
        Assert.Contains("default-dvm:/rw/config/qubes-firewall-user-script (kept there for the disposable sys-firewall)", leftovers[1].Message);
        Assert.All(leftovers, f => Assert.Contains("no declaration gives them", f.Message));
        Assert.Equal(["Install-QubeFirewallAgent -VMName sys-net", "Install-QubeFirewallAgent -VMName sys-firewall"], leftovers.Select(f => f.Fix));

        Run("Install-QubeFirewallAgent -VMName sys-net, sys-firewall -Force").AssertNoErrors();
        Assert.DoesNotContain(ForwardFindings("work", deep: true), x => x.Check is ForwardAuditChecks.UndeclaredPart);
        Assert.Empty(Run("Get-QubePortForward").Of<QubePortForward>());
    }

    [Fact]
    public void With_ipv6_on_the_chain_a_forward_takes_ipv6_sources_and_is_generated_for_ip6()
    {
        // refused while IPv6 is off
        var refused = Run("Add-QubePortForward work 443 -AllowFrom 2001:db8::/32");
        Assert.Equal("IPv6NotEnabled,QubesFirewall.PowerShell.Cmdlets.AddQubePortForwardCommand", Assert.Single(refused.Errors).FullyQualifiedErrorId);
        Assert.Contains("Set-QubeIPv6 -VMName sys-net -Enabled $true", refused.Errors[0].Exception.Message);

        Run("Set-QubeIPv6 -VMName sys-net -Enabled $true -Confirm:$false").AssertNoErrors();
        Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24, 2001:db8::/32").AssertNoErrors();
        var forward = Assert.Single(Run("Get-QubePortForward -VMName work").Of<QubePortForward>());
        Assert.True(forward.IPv6);
        Assert.Equal(["192.168.1.0/24", "2001:db8::/32"], forward.AllowFrom);
        using (var backend = new OfflineRoot(_root.Path))
        {
            var sysNet = backend.GetInventory().Get("sys-net").Features;
            Assert.Contains(sysNet, f => f.Key.StartsWith("vm-config.qubesfw.hop6.00443.tcp.", StringComparison.Ordinal) && f.Value.Contains(" nat=fd09:24ef:4179::a8a:", StringComparison.Ordinal) && f.Value.Contains(" src=2001:db8::/32 ", StringComparison.Ordinal));
            Assert.Contains(sysNet, f => f.Key.StartsWith("vm-config.qubesfw.hop4.00443.tcp.", StringComparison.Ordinal) && f.Value.Contains(" src=192.168.1.0/24 ", StringComparison.Ordinal));
        }
        Assert.Empty(ForwardFindings("work"));
    }
}
