using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;
using QubesFirewall.TestQubesd;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// Test-QubeFirewall through a hosted runspace, on both backends with the same expectations. The
/// findings for the unchanged sample, worked out by hand: every qube with a netvm, in qubes.xml order
/// (anon-whonix, default-dvm, personal, sys-firewall, sys-whonix, untrusted, whonix-workstation-18-dvm,
/// work); the two behind sys-whonix (a Whonix gateway) are not enforced but accept everything (Info);
/// personal's version 1 list names mail.example.org (rule 3) and has no final rule, which the Qube
/// Manager cannot show (its last rule, 4).
/// </summary>
public abstract class FirewallAuditCmdletTests : IDisposable
{
    protected readonly SampleRootCopy _root = new();

    public virtual void Dispose() => _root.Dispose();

    protected abstract PsRun Run(string script);

    /// <summary>Makes the backend read rules as a qubesd before core-admin commit f92669dd did (port 65536 accepted).</summary>
    protected abstract void AsAnOlderQubesd();

    private static List<(string, AuditSeverity, string, int?)> Shape(PsRun run) =>
        run.Of<AuditFinding>().Select(f => (f.VMName, f.Severity, f.Check, f.Number)).ToList();

    [Fact]
    public void The_sample_audited_whole()
    {
        var run = Run("Test-QubeFirewall -Severity Info");
        run.AssertNoErrors();
        Assert.Equal(
        [
            ("anon-whonix", AuditSeverity.Info, AuditChecks.NotEnforced, null),
            ("default-dvm", AuditSeverity.Info, AuditChecks.EnforcedIn, null),
            ("personal", AuditSeverity.Info, AuditChecks.EnforcedIn, null),
            ("personal", AuditSeverity.Warning, AuditChecks.HostName, 3),
            ("personal", AuditSeverity.Info, AuditChecks.QubeManagerShape, 4),
            ("sys-firewall", AuditSeverity.Info, AuditChecks.EnforcedIn, null),
            ("sys-net", AuditSeverity.Info, AuditChecks.NoNetVM, null), // no netvm, but it records the agent: its keys are audited
            ("sys-whonix", AuditSeverity.Info, AuditChecks.EnforcedIn, null),
            ("untrusted", AuditSeverity.Info, AuditChecks.EnforcedIn, null),
            ("whonix-workstation-18-dvm", AuditSeverity.Info, AuditChecks.NotEnforced, null),
            ("work", AuditSeverity.Info, AuditChecks.EnforcedIn, null),
        ], Shape(run));
        var sysFirewall = run.Of<AuditFinding>().Single(f => f.VMName == "sys-firewall");
        Assert.Equal("The rules of 'sys-firewall' are enforced in 'sys-net' (for 10.138.10.201): its qubes-firewall service builds the qube's chain from them.", sysFirewall.Message);
    }

    [Fact]
    public void A_dead_rule_is_found_and_its_fix_moves_it_and_can_run_twice()
    {
        Run("Add-QubeFirewallRule -VMName work -Rule 'action=accept dst4=192.168.10.0/24 proto=tcp dstports=8080' -Position 7").AssertNoErrors();
        var run = Run("Test-QubeFirewall work");
        var dead = run.Of<AuditFinding>().Single(f => f.Check == AuditChecks.DeadRule);
        Assert.Equal((AuditSeverity.Error, 7), (dead.Severity, dead.Number!.Value));
        Assert.Equal("action=accept dst4=192.168.10.0/24 proto=tcp dstports=8080-8080", dead.Rule!.Text);
        Assert.Equal("'action=accept specialtarget=dns', 'action=accept proto=icmp', 'action=accept dst4=10.1.2.0/24 proto=tcp dstports=443-443 comment=intranet https', "
            + "'action=accept dst4=10.1.2.10/32 proto=tcp dstports=22-22 comment=build server ssh', 'action=accept proto=tcp dstports=80-80', 'action=accept proto=tcp dstports=443-443', "
            + "'action=accept dst4=192.168.10.0/24 proto=tcp dstports=8080-8080', 'action=drop' | Set-QubeFirewallRule -VMName work", dead.Fix);

        var fix = new Dictionary<string, object?> { ["fix"] = dead.Fix };
        var apply = PowerShellHost.Run("& ([scriptblock]::Create($fix))", variables: fix, root: RootForScripts, environment: EnvironmentForScripts);
        apply.AssertNoErrors();
        var rules = Run("(Get-QubeFirewallRule work).Text").Output.Select(o => o.ToString()).ToList();
        Assert.Equal("action=accept dst4=192.168.10.0/24 proto=tcp dstports=8080-8080", rules[6]);
        Assert.Equal("action=drop", rules[7]);
        Assert.DoesNotContain(Run("Test-QubeFirewall work").Of<AuditFinding>(), f => f.Check == AuditChecks.DeadRule);

        PowerShellHost.Run("& ([scriptblock]::Create($fix))", variables: fix, root: RootForScripts, environment: EnvironmentForScripts).AssertNoErrors();
        Assert.Equal(rules, Run("(Get-QubeFirewallRule work).Text").Output.Select(o => o.ToString()));
    }

    /// <summary>How a script outside <see cref="Run"/> reaches the same backend.</summary>
    protected abstract string? RootForScripts { get; }

    protected abstract IDictionary<string, string>? EnvironmentForScripts { get; }

    [Fact]
    public void Qubes_bind_from_the_pipeline_and_each_is_audited_once()
    {
        var run = Run("Get-Qube -NetVM sys-whonix | Test-QubeFirewall -Severity Info");
        run.AssertNoErrors();
        Assert.Equal(["anon-whonix", "whonix-workstation-18-dvm"], run.Of<AuditFinding>().Select(f => f.VMName));

        var rules = Run("Get-QubeFirewallRule work | Test-QubeFirewall -Severity Info");
        rules.AssertNoErrors();
        Assert.Equal([("work", AuditSeverity.Info, AuditChecks.EnforcedIn, (int?)null)], Shape(rules));
    }

    [Fact]
    public void Wildcards_names_without_network_and_dom0()
    {
        var run = Run("Test-QubeFirewall -Severity Info 'sys-*', dom0 -Verbose");
        run.AssertNoErrors();
        Assert.Equal(
        [
            ("sys-firewall", AuditSeverity.Info, AuditChecks.EnforcedIn, null),
            ("sys-net", AuditSeverity.Info, AuditChecks.NoNetVM, null),
            ("sys-usb", AuditSeverity.Info, AuditChecks.NoNetVM, null),
            ("sys-whonix", AuditSeverity.Info, AuditChecks.EnforcedIn, null),
        ], Shape(run));
        Assert.Contains("dom0 has no Qubes firewall; skipped.", run.Verbose);
    }

    [Fact]
    public void An_unknown_qube_is_an_error_and_the_rest_goes_on()
    {
        var run = Run("Test-QubeFirewall -Severity Info nosuch, work");
        Assert.Equal("QubeNotFound,QubesFirewall.PowerShell.Cmdlets.TestQubeFirewallCommand", Assert.Single(run.Errors).FullyQualifiedErrorId);
        Assert.Equal(["work"], run.Of<AuditFinding>().Select(f => f.VMName));
    }

    [Fact]
    public void A_rule_an_older_qubesd_accepted_is_an_error()
    {
        // A firewall.xml as R4.2's qubesd let it be written: port 65536.
        var path = _root.FirewallXml("untrusted");
        File.WriteAllText(path, """
            <firewall version="2">
              <rules>
                <rule>
                  <properties>
                    <property name="action">accept</property>
                    <property name="proto">tcp</property>
                    <property name="dstports">65536</property>
                  </properties>
                </rule>
                <rule>
                  <properties>
                    <property name="action">accept</property>
                  </properties>
                </rule>
              </rules>
            </firewall>
            """);
        AsAnOlderQubesd();
        var run = Run("Test-QubeFirewall -Severity Info untrusted");
        run.AssertNoErrors();
        Assert.Equal(
        [
            ("untrusted", AuditSeverity.Info, AuditChecks.EnforcedIn, null),
            ("untrusted", AuditSeverity.Error, AuditChecks.InvalidRule, 0),
        ], Shape(run));
    }
}

public sealed class OfflineFirewallAuditCmdletTests : FirewallAuditCmdletTests
{
    // Offline the module reads firewall.xml itself.
    protected override void AsAnOlderQubesd() { }

    protected override PsRun Run(string script) => PowerShellHost.Run(script, _root.Path);

    protected override string? RootForScripts => _root.Path;

    protected override IDictionary<string, string>? EnvironmentForScripts => null;
}

[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class LiveFirewallAuditCmdletTests : FirewallAuditCmdletTests
{
    private readonly LiveServer _live;
    private FakeQubesd Server => _live.Server;

    public LiveFirewallAuditCmdletTests()
    {
        _live = new LiveServer(_root.Path);
    }

    public override void Dispose()
    {
        _live.Dispose();
        base.Dispose();
    }

    protected override IDictionary<string, string>? EnvironmentForScripts => _live.Environment;

    protected override string? RootForScripts => null;

    protected override PsRun Run(string script) => PowerShellHost.Run(script, environment: EnvironmentForScripts);

    // The file came from a qubesd that accepted port 65536, and that qubesd serves it (a newer one cannot load it).
    protected override void AsAnOlderQubesd() => Server.AcceptsPort65536 = true;

    [Fact]
    public void The_audit_only_reads()
    {
        Server.ClearCalls();
        Run("Test-QubeFirewall -Severity Info").AssertNoErrors();
        Assert.All(Server.Calls, c => Assert.Matches(@"\.(List|Get|GetAll)$", c.Method));
        Assert.Equal(9, Server.CountCalls("admin.vm.firewall.Get")); // the 8 qubes with a netvm, and sys-net for its agent keys
    }
}
