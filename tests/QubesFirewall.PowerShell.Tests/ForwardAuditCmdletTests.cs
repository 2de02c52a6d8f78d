using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// Test-QubeFirewall's port forward checks and IPv6 forwards through a hosted runspace on a copy of the sample
/// (where sys-firewall is a disposable of default-dvm): findings come out as objects, and a fix they suggest runs
/// as a script and clears them.
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

    private List<AuditFinding> ForwardFindings(string qube) =>
        Run($"Test-QubeFirewall {qube}").Of<AuditFinding>().Where(f => f.Check.StartsWith("Forward", StringComparison.Ordinal)).ToList();

    [Fact]
    public void A_forward_through_the_disposable_sys_firewall_is_a_warning_and_nothing_is_missing()
    {
        Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Force").AssertNoErrors();
        var f = Assert.Single(ForwardFindings("work"));
        Assert.Equal((AuditSeverity.Warning, "work", ForwardAuditChecks.DisposableHop), (f.Severity, f.VMName, f.Check));
        Assert.Contains("'sys-firewall' (hop 2 of 2), a disposable of 'default-dvm'", f.Message);
        // the findings filter like any object
        Assert.Single(Run("Test-QubeFirewall | Where-Object Check -like 'Forward*'").Of<AuditFinding>());
    }

    [Fact]
    public void Custom_persist_on_a_hop_is_reported()
    {
        Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Force").AssertNoErrors();
        using (var backend = new OfflineRoot(_root.Path)) backend.SetFeature("sys-net", "service.custom-persist", "1");
        var f = Assert.Single(ForwardFindings("work"), x => x.Check == ForwardAuditChecks.CustomPersistHop);
        Assert.Equal(AuditSeverity.Warning, f.Severity);
        Assert.Null(f.Fix); // qvm-service is no command of this module: the message says it
        Assert.Contains("qvm-service --disable sys-net custom-persist", f.Message);
    }

    [Fact]
    public void A_missing_part_is_an_error_and_its_fix_run_as_a_script_restores_it()
    {
        Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Force").AssertNoErrors();
        var file = Path.Combine(_root.Path, "qubesfirewall-state", "sys-net", "rw", "config", "qubes-firewall-user-script");
        File.WriteAllText(file, ManagedBlock.Remove(File.ReadAllText(file)));

        var missing = Assert.Single(ForwardFindings("work"), x => x.Check == ForwardAuditChecks.MissingPart);
        Assert.Equal(AuditSeverity.Error, missing.Severity);
        Assert.Contains("sys-net:/rw/config/qubes-firewall-user-script does not hold its part", missing.Message);
        var fix = missing.Fix!; // the command alone: the explanation is in the message
        Assert.Equal("Get-QubePortForward -VMName work -Port 443 -Protocol Tcp | Add-QubePortForward -Force", fix);

        Run("& ([scriptblock]::Create($fix))", new Dictionary<string, object?> { ["fix"] = fix }).AssertNoErrors();
        Assert.DoesNotContain(ForwardFindings("work"), x => x.Check == ForwardAuditChecks.MissingPart);
        Assert.Contains("qubesfw-dnat", File.ReadAllText(file));
    }

    [Fact]
    public void Rules_left_without_a_declaration_are_an_error_whose_fix_removes_them()
    {
        Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Force").AssertNoErrors();
        using (var backend = new OfflineRoot(_root.Path)) backend.RemoveFeature("work", "qubesfirewall.forward.tcp.443");
        var leftovers = ForwardFindings("work").Where(x => x.Check == ForwardAuditChecks.UndeclaredPart).ToList();
        Assert.Equal(2, leftovers.Count); // sys-net and sys-firewall (kept in default-dvm)
        Assert.Contains("default-dvm:/rw/config/qubes-firewall-user-script (kept there for the disposable sys-firewall)", leftovers[1].Message);
        var fix = leftovers[0].Fix!;
        // derived from a file's content: the fix rebuilds the files from the declarations and opens nothing
        Assert.Equal("Remove-QubePortForward -VMName work -Port 443 -Protocol Tcp -Confirm:$false", fix);

        Run("& ([scriptblock]::Create($fix))", new Dictionary<string, object?> { ["fix"] = fix }).AssertNoErrors();
        Assert.DoesNotContain(ForwardFindings("work"), x => x.Check is ForwardAuditChecks.UndeclaredPart or ForwardAuditChecks.MissingPart);
        Assert.Empty(Run("Get-QubePortForward").Of<QubePortForward>());
    }

    [Fact]
    public void With_ipv6_on_the_chain_a_forward_takes_ipv6_sources_and_is_generated_for_ip6()
    {
        // refused while IPv6 is off
        var refused = Run("Add-QubePortForward work 443 -AllowFrom 2001:db8::/32 -Force");
        Assert.Equal("IPv6NotEnabled,QubesFirewall.PowerShell.Cmdlets.AddQubePortForwardCommand", Assert.Single(refused.Errors).FullyQualifiedErrorId);
        Assert.Contains("Set-QubeIPv6 -VMName sys-net -Enabled $true", refused.Errors[0].Exception.Message);

        Run("Set-QubeIPv6 -VMName sys-net -Enabled $true -Confirm:$false").AssertNoErrors();
        Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24, 2001:db8::/32 -Force").AssertNoErrors();
        var forward = Assert.Single(Run("Get-QubePortForward -VMName work").Of<QubePortForward>());
        Assert.True(forward.IPv6);
        Assert.Equal(["192.168.1.0/24", "2001:db8::/32"], forward.AllowFrom);
        var sysNet = File.ReadAllText(Path.Combine(_root.Path, "qubesfirewall-state", "sys-net", "rw", "config", "qubes-firewall-user-script"));
        Assert.Contains("add rule ip6 qubes qubesfw-dnat iifname != \"vif*\" iifname != \"lo\" fib daddr type local ip6 saddr 2001:db8::/32 tcp dport 443 dnat to fd09:24ef:4179::a8a:", sysNet);
        Assert.Contains("add rule ip qubes qubesfw-dnat iifname != \"vif*\" iifname != \"lo\" fib daddr type local ip saddr 192.168.1.0/24 tcp dport 443", sysNet);
        Assert.DoesNotContain(ForwardFindings("work"), x => x.Check is ForwardAuditChecks.MissingPart or ForwardAuditChecks.UndeclaredPart);
    }
}
