using QubesFirewall.Engine.Model;
using QubesFirewall.TestQubesd;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// Set-QubeFirewallRule: the rules given become the list. In the sample, work's list is seven rules:
/// dns, icmp, intranet https, build server ssh, port 80, port 443, drop; untrusted has no firewall.xml
/// (qubesd's default, a single accept).
/// </summary>
public sealed class SetFirewallRuleCmdletTests : IDisposable
{
    private readonly SampleRootCopy _root = new();

    public void Dispose() => _root.Dispose();

    private PsRun Run(string script) => PowerShellHost.Run(script, _root.Path);

    private List<string> Texts(string qube) => Run($"(Get-QubeFirewallRule {qube}).Text").Output.Select(o => o.ToString()).ToList();

    private const string ThreeRules = "'action=accept specialtarget=dns', 'action=accept proto=tcp dstports=443', 'action=drop'";

    [Fact]
    public void The_rules_given_become_the_list_and_a_row_deleted_from_the_file_goes()
    {
        // What Add cannot do: the second run, with a rule less, leaves the list without it.
        Run(ThreeRules + " | Set-QubeFirewallRule -VMName work -Confirm:$false").AssertNoErrors();
        Assert.Equal(["action=accept specialtarget=dns", "action=accept proto=tcp dstports=443-443", "action=drop"], Texts("work"));
        Run("'action=accept specialtarget=dns', 'action=drop' | Set-QubeFirewallRule -VMName work").AssertNoErrors();
        Assert.Equal(["action=accept specialtarget=dns", "action=drop"], Texts("work"));
    }

    [Fact]
    public void A_list_ending_in_drop_then_an_accept_is_set_in_that_order_not_merged()
    {
        Run("'action=drop', 'action=accept proto=tcp dstports=22' | Set-QubeFirewallRule -VMName untrusted").AssertNoErrors();
        Assert.Equal(["action=drop", "action=accept proto=tcp dstports=22-22"], Texts("untrusted"));
    }

    [Fact]
    public void Running_it_twice_writes_once()
    {
        Run(ThreeRules + " | Set-QubeFirewallRule -VMName work").AssertNoErrors();
        var stamp = File.GetLastWriteTimeUtc(_root.FirewallXml("work"));
        var before = _root.Snapshot();
        Thread.Sleep(20);
        var again = Run(ThreeRules + " | Set-QubeFirewallRule -VMName work -Verbose");
        again.AssertNoErrors();
        _root.AssertUnchanged(before);
        Assert.Equal(stamp, File.GetLastWriteTimeUtc(_root.FirewallXml("work")));
        Assert.Contains(again.Verbose, v => v.StartsWith("work: the list already is these 3 rules; nothing changes", StringComparison.Ordinal));
    }

    [Fact]
    public void WhatIf_shows_kept_added_removed_and_moved_and_writes_nothing()
    {
        var before = _root.Snapshot();
        // icmp moves behind the new 443 rule... written by hand from the sample's list.
        var run = Run("'action=accept specialtarget=dns', 'action=accept proto=tcp dstports=8443', 'action=accept proto=tcp dstports=443', 'action=accept proto=icmp', 'action=drop' | Set-QubeFirewallRule -VMName work -Verbose -WhatIf");
        run.AssertNoErrors();
        _root.AssertUnchanged(before);
        // -WhatIf goes to the host; the same text is in ShouldProcess's verbose line with -Confirm:$false.
        var shown = Run("'action=accept specialtarget=dns', 'action=accept proto=tcp dstports=8443', 'action=accept proto=tcp dstports=443', 'action=accept proto=icmp', 'action=drop' | Set-QubeFirewallRule -VMName work -Verbose -Confirm:$false");
        shown.AssertNoErrors();
        // The uniform plan text: what it does, then one numbered change per qube, its diff indented.
        var text = Assert.Single(shown.Verbose, v => v.StartsWith("Set the firewall rules of work:", StringComparison.Ordinal));
        Assert.Equal(string.Join("\n",
            "Set the firewall rules of work:",
            "  1. work: set 5 rules (kept 3, added 1, removed 3, moved 1)",
            "         =   0 action=accept specialtarget=dns",
            "         +   1 action=accept proto=tcp dstports=8443-8443",
            "         =   2 action=accept proto=tcp dstports=443-443",
            "         ~   3 action=accept proto=icmp (was 1)",
            "         =   4 action=drop",
            "         -   2 action=accept dst4=10.1.2.0/24 proto=tcp dstports=443-443 comment=intranet https",
            "         -   3 action=accept dst4=10.1.2.10/32 proto=tcp dstports=22-22 comment=build server ssh",
            "         -   4 action=accept proto=tcp dstports=80-80"), text);
    }

    [Fact]
    public void Empty_input_is_refused_unless_AllowEmpty_and_then_drops_everything()
    {
        var before = _root.Snapshot();
        var refused = Run("@() | Set-QubeFirewallRule -VMName work");
        Assert.Equal("EmptyRuleInput,QubesFirewall.PowerShell.Cmdlets.SetQubeFirewallRuleCommand", Assert.Single(refused.Errors).FullyQualifiedErrorId);
        Assert.Contains("drops every connection", refused.Errors[0].ToString());
        // a file of comments only is empty too
        Assert.Equal("EmptyRuleInput,QubesFirewall.PowerShell.Cmdlets.SetQubeFirewallRuleCommand",
            Assert.Single(Run("'# nothing yet', '' | Set-QubeFirewallRule -VMName work").Errors).FullyQualifiedErrorId);
        _root.AssertUnchanged(before);

        var allowed = Run("@() | Set-QubeFirewallRule -VMName work -AllowEmpty -Verbose -Confirm:$false");
        allowed.AssertNoErrors();
        Assert.Contains(allowed.Verbose, v => v.Contains("The list given is EMPTY: every connection of work is dropped", StringComparison.Ordinal));
        Assert.Equal(["action=drop"], Texts("work"));
    }

    [Fact]
    public void A_wildcard_sets_the_same_list_on_every_match_in_one_ShouldProcess()
    {
        var run = Run("'action=accept specialtarget=dns', 'action=drop' | Set-QubeFirewallRule -VMName *-dvm -Verbose -Confirm:$false");
        run.AssertNoErrors();
        var asked = run.Verbose.Where(v => v.StartsWith("Performing the operation", StringComparison.Ordinal) || v.Contains(": set 2 rules", StringComparison.Ordinal)).ToList();
        var one = Assert.Single(asked);
        Assert.Contains("default-dvm: set 2 rules", one);
        Assert.Contains("whonix-workstation-18-dvm: set 2 rules", one);
        Assert.Equal(["action=accept specialtarget=dns", "action=drop"], Texts("default-dvm"));
        Assert.Equal(["action=accept specialtarget=dns", "action=drop"], Texts("whonix-workstation-18-dvm"));
    }

    [Fact]
    public void Piped_objects_name_their_qube_and_each_qube_gets_its_rows()
    {
        // As Import-Csv gives them: every column a string, empty cells empty strings.
        var run = Run("""
            @([pscustomobject]@{ VMName = 'untrusted'; Action = 'Accept'; Protocol = ''; DstPorts = ''; SpecialTarget = 'Dns' },
              [pscustomobject]@{ VMName = 'untrusted'; Action = 'Drop'; Protocol = ''; DstPorts = ''; SpecialTarget = '' },
              [pscustomobject]@{ VMName = 'personal'; Action = 'Accept'; Protocol = 'Tcp'; DstPorts = '443'; SpecialTarget = '' },
              [pscustomobject]@{ VMName = 'personal'; Action = 'Drop'; Protocol = ''; DstPorts = ''; SpecialTarget = '' }) | Set-QubeFirewallRule -PassThru
            """);
        run.AssertNoErrors();
        Assert.Equal(["untrusted#0: action=accept specialtarget=dns", "untrusted#1: action=drop", "personal#0: action=accept proto=tcp dstports=443-443", "personal#1: action=drop"],
            run.Of<QubeFirewallRule>().Select(r => r.ToString()));
        Assert.Equal(["action=accept proto=tcp dstports=443-443", "action=drop"], Texts("personal"));
    }

    [Fact]
    public void An_invalid_rule_sets_nothing_for_that_qube()
    {
        var before = _root.Snapshot();
        var run = Run("'action=accept specialtarget=dns', 'action=accept proto=tcp dstports=70000' | Set-QubeFirewallRule -VMName work");
        Assert.Contains(run.Errors, e => e.FullyQualifiedErrorId.StartsWith("RulesNotSet,", StringComparison.Ordinal));
        _root.AssertUnchanged(before);
    }

    [Fact]
    public void Rules_nobody_enforces_are_set_with_the_audits_words()
    {
        var run = Run("'action=drop' | Set-QubeFirewallRule -VMName anon-whonix");
        run.AssertNoErrors();
        var audit = Run("Test-QubeFirewall anon-whonix").Of<Engine.Planning.AuditFinding>().Single();
        Assert.Equal(audit.Message.Replace(" What the list drops passes through 'sys-whonix' unfiltered.", "", StringComparison.Ordinal), Assert.Single(run.Warnings));
    }

    [Fact]
    public void Duplicates_are_kept_once_with_a_warning()
    {
        var run = Run("'action=accept proto=icmp', 'action=drop', 'action=accept proto=icmp' | Set-QubeFirewallRule -VMName work");
        run.AssertNoErrors();
        Assert.Equal("'action=accept proto=icmp' is given more than once; the list holds it once, at its first place.", Assert.Single(run.Warnings));
        Assert.Equal(["action=accept proto=icmp", "action=drop"], Texts("work"));
    }

    [Fact]
    public void Unknown_qubes_and_dom0_are_refused()
    {
        Assert.Equal("QubeNotFound,QubesFirewall.PowerShell.Cmdlets.SetQubeFirewallRuleCommand", Assert.Single(Run("'action=drop' | Set-QubeFirewallRule -VMName nosuch").Errors).FullyQualifiedErrorId);
        Assert.Equal("NoFirewall,QubesFirewall.PowerShell.Cmdlets.SetQubeFirewallRuleCommand", Assert.Single(Run("'action=drop' | Set-QubeFirewallRule -VMName dom0").Errors).FullyQualifiedErrorId);
        Assert.Equal("No qube matches 'nosuch-*'; nothing was set.", Assert.Single(Run("'action=drop' | Set-QubeFirewallRule -VMName nosuch-*").Warnings));
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public void Live_one_Set_per_qube()
    {
        using var live = new LiveServer(_root.Path);
        live.Server.ClearCalls();
        var run = PowerShellHost.Run(ThreeRules + " | Set-QubeFirewallRule -VMName work", environment: live.Environment);
        run.AssertNoErrors();
        Assert.Equal(1, live.Server.CountCalls("admin.vm.firewall.Set"));
        Assert.Equal(["action=accept specialtarget=dns", "action=accept proto=tcp dstports=443-443", "action=drop"],
            PowerShellHost.Run("(Get-QubeFirewallRule work).Text", environment: live.Environment).Output.Select(o => o.ToString()));
    }
}

/// <summary>Cmdlets that take one qube say how to act on several when given a wildcard.</summary>
public sealed class WildcardHintTests : IDisposable
{
    private readonly SampleRootCopy _root = new();

    public void Dispose() => _root.Dispose();

    [Theory]
    [InlineData("Add-QubeFirewallRule -VMName dev-* -Rule action=drop")]
    [InlineData("Remove-QubeFirewallRule -VMName dev-* -Number 0 -Confirm:$false")]
    [InlineData("Sync-QubeFirewall -VMName dev-*")]
    public void A_wildcard_where_one_qube_is_taken_says_to_pipe_Get_Qube(string script)
    {
        var run = PowerShellHost.Run(script, _root.Path);
        var error = Assert.Single(run.Errors);
        Assert.StartsWith("InvalidQubeName,", error.FullyQualifiedErrorId);
        Assert.Contains("'dev-*' is a wildcard, and this parameter takes one qube by its name. To act on several qubes, pipe them in: Get-Qube dev-* | ...", error.ToString());
    }
}
