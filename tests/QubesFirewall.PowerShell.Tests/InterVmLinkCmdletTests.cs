using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// Enable-, Disable- and Get-QubeInterVmNetwork through a hosted runspace, with the same expectations on the offline
/// root (<see cref="OfflineInterVmLinkCmdletTests"/>) and the live backend against the stand-in qubesd and qvm-run
/// (<see cref="LiveInterVmLinkCmdletTests"/>). In the sample root work, personal and untrusted share sys-firewall, a
/// disposable of default-dvm that carries its part as its own agent keys; anon-whonix is behind sys-whonix.
/// </summary>
public abstract class InterVmLinkCmdletTests : IDisposable
{
    protected readonly SampleRootCopy _root = new();

    public virtual void Dispose() => _root.Dispose();

    protected abstract PsRun Run(string script);

    protected static string Fqid(string id, string cmdlet) => $"{id},QubesFirewall.PowerShell.Cmdlets.{cmdlet}Command";

    protected string? StateFile(string qube, string path)
    {
        var file = Path.Combine(_root.Path, "qubesfirewall-state", qube, path.TrimStart('/'));
        return File.Exists(file) ? File.ReadAllText(file) : null;
    }

    /// <summary>A qube's agent keys (<c>vm-config.qubesfw.*</c>), one value per line, read from the root's qubes.xml.</summary>
    protected string Keys(string qube)
    {
        using var root = new Engine.Backends.OfflineRoot(_root.Path);
        return string.Join("\n", root.GetInventory().Get(qube).Features.Where(f => Engine.Agent.AgentFeatures.IsAgentFeature(f.Key)).Select(f => f.Value));
    }

    private IReadOnlyList<string> Rules(string vm) => Run($"Get-QubeFirewallRule -VMName {vm} | ForEach-Object {{ $_.Rule.Text }}").Output.Select(o => o.ToString()).ToList();

    [Fact]
    public void A_qube_from_Get_Qube_is_linked_and_PassThru_shows_all_three_parts_present()
    {
        var run = Run("Get-Qube work | Enable-QubeInterVmNetwork -To personal -Port 5432 -PassThru");
        run.AssertNoErrors();
        var link = Assert.Single(run.Of<QubeInterVmLink>());
        Assert.Equal(("work", "personal", InterVmProtocol.Tcp, "5432", "sys-firewall"), (link.From, link.To, link.Protocol, link.Port, link.NetVM));
        Assert.Equal((true, true, true), (link.ForwardRulePresent, link.InputRulePresent, link.FirewallRulePresent));
        Assert.Empty(run.Warnings);

        var rules = Rules("work");
        var index = rules.ToList().IndexOf("action=accept dst4=10.137.0.10/32 proto=tcp dstports=5432-5432 comment=qubesfirewall link to personal");
        Assert.True(index >= 0 && index == rules.Count - 2, string.Join("\n", rules)); // before the final drop
        Assert.Contains(" proto=tcp ports=5432 src=10.137.0.11 dst=10.137.0.10 from=work vm=personal", Keys("sys-firewall"));
        Assert.Contains(" proto=tcp ports=5432 src=10.137.0.11 dst=10.137.0.10 from=work vm=personal", Keys("personal"));
        Assert.Null(StateFile("default-dvm", "/rw/config/qubes-firewall-user-script"));
        Assert.Null(StateFile("personal", "/rw/config/rc.local"));

        var listed = Assert.Single(Run("Get-QubeInterVmNetwork -From work").Of<QubeInterVmLink>());
        Assert.True(listed.IsComplete);
        Assert.Empty(Run("Get-QubeInterVmNetwork -From personal").Output);
        Assert.Single(Run("Get-QubeInterVmNetwork -To pers*").Output);
        Assert.Empty(Run("Get-QubeInterVmNetwork -To untrusted").Output);
    }

    [Fact]
    public void WhatIf_changes_nothing_and_Verbose_shows_the_whole_plan()
    {
        var before = _root.Snapshot();
        Run("Enable-QubeInterVmNetwork -From work -To personal -Port 5432 -WhatIf").AssertNoErrors();
        _root.AssertUnchanged(before);

        var run = Run("Enable-QubeInterVmNetwork work personal -Port 5432 -Verbose -Confirm:$false");
        run.AssertNoErrors();
        var plan = Assert.Single(run.Verbose, v => v.StartsWith("Enable inter-qube link work -> personal tcp/5432 (through sys-firewall):", StringComparison.Ordinal));
        Assert.Contains("1. work: set feature qubesfirewall.link.personal.tcp.5432 = '", plan);
        Assert.Contains("personal: set feature vm-config.qubesfw.ldst4.", plan);
        Assert.Contains("sys-firewall: set feature vm-config.qubesfw.lnet4.", plan);
        Assert.DoesNotContain("default-dvm", plan);
        Assert.Contains("work: add to its Qubes firewall: action=accept dst4=10.137.0.10/32", plan);
    }

    [Fact]
    public void Qubes_behind_different_network_qubes_are_refused_naming_both()
    {
        var before = _root.Snapshot();
        var run = Run("Enable-QubeInterVmNetwork -From work -To anon-whonix -Port 80");
        var error = Assert.Single(run.Errors);
        Assert.Equal(Fqid("DifferentNetVM", "EnableQubeInterVmNetwork"), error.FullyQualifiedErrorId);
        Assert.Contains("'work' uses the network qube 'sys-firewall' and 'anon-whonix' uses 'sys-whonix'", error.ToString());
        _root.AssertUnchanged(before);
        // Never advice that takes anon-whonix off Tor (qvm-prefs anon-whonix netvm sys-firewall), nor -Type Internal,
        // which sys-whonix refuses: why the link cannot be, and what can: qubes.ConnectTCP.
        var text = error.ToString();
        Assert.DoesNotContain("qvm-prefs", text);
        Assert.DoesNotContain("-Type Internal", text);
        Assert.Contains("Moving 'anon-whonix' off 'sys-whonix' is not the way: that would take it off Tor", text);
        Assert.Contains("use qubes.ConnectTCP: Add-QubeTcpBinding -From work -To anon-whonix -Port 80.", text);
        // ... and the command it names works
        Run("Add-QubeTcpBinding -From work -To anon-whonix -Port 80").AssertNoErrors();
    }

    [Theory]
    [InlineData("0")]
    [InlineData("70000")]
    [InlineData("'80;reboot'")]
    [InlineData("'90-80'")]
    public void Bad_ports_are_refused_before_anything_is_planned(string port)
    {
        var before = _root.Snapshot();
        var run = Run($"Enable-QubeInterVmNetwork -From work -To personal -Port {port}");
        Assert.Equal(Fqid("InvalidLinkPort", "EnableQubeInterVmNetwork"), Assert.Single(run.Errors).FullyQualifiedErrorId);
        _root.AssertUnchanged(before);
    }

    [Fact]
    public void Get_piped_to_Disable_removes_every_part_of_every_link_and_restores_the_rule_lists()
    {
        var workRules = Rules("work");
        var personalRules = Rules("personal");
        Run("Enable-QubeInterVmNetwork -From work -To personal -Port 5432, '6000-6010' -Protocol Any -Bidirectional").AssertNoErrors();
        var links = Run("Get-QubeInterVmNetwork").Of<QubeInterVmLink>().ToList();
        Assert.Equal(8, links.Count);
        Assert.All(links, l => Assert.True(l.IsComplete, l.ToString()));
        Assert.Equal(4, links.Count(l => l.From == "personal"));

        var off = Run("Get-QubeInterVmNetwork | Disable-QubeInterVmNetwork -Confirm:$false");
        off.AssertNoErrors();
        Assert.Empty(Run("Get-QubeInterVmNetwork").Output);
        Assert.Equal(workRules, Rules("work"));
        Assert.Equal(personalRules.Count == 0 ? ["action=accept"] : personalRules, Rules("personal"));
        Assert.Equal("", Keys("personal"));
        Assert.Equal("", Keys("sys-firewall"));
        Assert.Equal("", Keys("work"));
        Assert.Empty(Run("(Get-Qube work).Features.Keys | Where-Object { $_ -like 'qubesfirewall.link.*' }").Output);
    }

    [Fact]
    public void Disable_without_the_link_is_an_error_and_Disable_asks_first()
    {
        var run = Run("Disable-QubeInterVmNetwork -From work -To personal -Port 5432 -Confirm:$false");
        Assert.Equal(Fqid("LinkNotFound", "DisableQubeInterVmNetwork"), Assert.Single(run.Errors).FullyQualifiedErrorId);
        Run("Enable-QubeInterVmNetwork -From work -To personal -Port 5432").AssertNoErrors();
        var prompt = Run("Disable-QubeInterVmNetwork -From work -To personal -Port 5432");
        Assert.Contains(prompt.Errors, e => e.FullyQualifiedErrorId.StartsWith("HostFunctionNotImplemented", StringComparison.Ordinal));
        Assert.Single(Run("Get-QubeInterVmNetwork").Output);
    }

    [Fact]
    public void Test_QubeFirewall_reports_a_link_whose_firewall_rule_was_removed()
    {
        Run("Enable-QubeInterVmNetwork -From work -To personal -Port 5432").AssertNoErrors();
        Assert.DoesNotContain(Run("Test-QubeFirewall work").Of<AuditFinding>(), f => f.Check == InterVmLinkAuditCheck.LinkIncomplete);
        Run("Get-QubeFirewallRule work | Where-Object { $_.Rule.Comment -eq 'qubesfirewall link to personal' } | Remove-QubeFirewallRule -Confirm:$false").AssertNoErrors();
        var finding = Assert.Single(Run("Test-QubeFirewall work").Of<AuditFinding>(), f => f.Check == InterVmLinkAuditCheck.LinkIncomplete);
        Assert.Equal(AuditSeverity.Error, finding.Severity);
        Assert.Contains("the accept for personal in work's own Qubes firewall", finding.Message);
        Assert.Equal("Enable-QubeInterVmNetwork -From work -To personal -Protocol Tcp -Port 5432", finding.Fix);

        // the fix it names, as it is, puts back just that part
        Run(finding.Fix!).AssertNoErrors();
        Assert.True(Assert.Single(Run("Get-QubeInterVmNetwork").Of<QubeInterVmLink>()).IsComplete);
    }
}

/// <summary>The link cmdlets on an offline root.</summary>
public sealed class OfflineInterVmLinkCmdletTests : InterVmLinkCmdletTests
{
    protected override PsRun Run(string script) => PowerShellHost.Run(script, _root.Path);

    [Fact]
    public void A_halted_destination_gets_its_keys_offline()
    {
        Run("Enable-QubeInterVmNetwork -From work -To untrusted -Port 8080 -PassThru").AssertNoErrors();
        Assert.Contains(" proto=tcp ports=8080 src=10.137.0.11 dst=10.137.0.12 from=work vm=untrusted", Keys("untrusted"));
        Assert.Null(StateFile("untrusted", "/rw/config/rc.local"));
    }
}

/// <summary>The link cmdlets on the live backend (stand-in qubesd, stand-in qvm-run).</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class LiveInterVmLinkCmdletTests : InterVmLinkCmdletTests
{
    private readonly LiveStandIn _live;

    public LiveInterVmLinkCmdletTests()
    {
        _live = new LiveStandIn(_root.Path, "qfw-link-");
        // default-dvm keeps the file of the sample's disposable sys-firewall: on the live backend it must run too
        _live.Server.SetPowerState("default-dvm", PowerState.Running);
    }

    public override void Dispose()
    {
        _live.Dispose();
        base.Dispose();
    }

    protected override PsRun Run(string script) => PowerShellHost.Run(script, environment: _live.Environment);

    [Fact]
    public void Features_and_the_rule_list_go_through_qubesd_and_each_running_agent_is_asked_once()
    {
        _live.Server.ClearCalls();
        Run("Enable-QubeInterVmNetwork -From work -To personal -Port 5432").AssertNoErrors();
        Assert.Equal(1, _live.Server.CountCalls("admin.vm.feature.Set", "work"));
        Assert.Equal(1, _live.Server.CountCalls("admin.vm.firewall.Set", "work"));
        Assert.Equal(2, _live.Server.CountCalls("admin.vm.feature.Set", "sys-firewall")); // its part and its gen
        Assert.Equal(2, _live.Server.CountCalls("admin.vm.feature.Set", "personal"));
        // then one status read of each running qube whose keys changed; no script runs, nothing is written
        Assert.Equal(["personal exec /bin/sh -s 2>&1", "sys-firewall exec /bin/sh -s 2>&1"], _live.QvmRunLog.Order(StringComparer.Ordinal));
        Assert.Null(StateFile("sys-firewall", "last-run.sh"));
    }

    [Fact]
    public void Halted_qubes_get_their_keys_and_are_Pending_and_nothing_is_started()
    {
        _live.Server.SetPowerState("sys-firewall", PowerState.Halted);
        _live.Server.ClearCalls();
        var run = Run("Enable-QubeInterVmNetwork -From work -To untrusted -Port 8080 -Verbose");
        run.AssertNoErrors();
        Assert.Equal(0, _live.Server.CountCalls("admin.vm.Start"));
        Assert.Equal(1, _live.Server.CountCalls("admin.vm.firewall.Set", "work"));
        Assert.Contains(" vm=untrusted", Keys("sys-firewall"));
        Assert.Contains(" vm=untrusted", Keys("untrusted"));
        // sys-firewall and untrusted are halted: their agents apply the keys when they start; nothing runs now
        Assert.Empty(_live.QvmRunLog);
        Assert.Equal(Fqid("NamedParameterNotFound", "EnableQubeInterVmNetwork"),
            Assert.Single(Run("Enable-QubeInterVmNetwork -From work -To untrusted -Port 8081 -Start").Errors).FullyQualifiedErrorId);
    }

}
