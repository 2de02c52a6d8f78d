using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>What a new user meets first: listing, completion, -Verbose, who enforces the rules.</summary>
public sealed class FirstUseCmdletTests : IDisposable
{
    private readonly SampleRootCopy _root = new();

    public void Dispose() => _root.Dispose();

    private PsRun Run(string script) => PowerShellHost.Run(script, _root.Path);

    private List<string> Complete(string line) =>
        Run($"$line = \"{line}\"; [System.Management.Automation.CommandCompletion]::CompleteInput($line, $line.Length, $null).CompletionMatches.CompletionText")
            .Output.Where(o => o is not null).Select(o => o.ToString()).ToList();

    [Fact]
    public void Get_QubeFirewallRule_without_a_name_lists_every_qube_like_the_other_Get_cmdlets()
    {
        var run = Run("Get-QubeFirewallRule");
        run.AssertNoErrors();
        var rules = run.Of<QubeFirewallRule>().ToList();
        // every qube of the sample but dom0, in qubes.xml order; work's seven rules among them
        Assert.Equal(Run("(Get-Qube | Where-Object Class -ne AdminVM).Name").Output.Select(o => o.ToString()), rules.Select(r => r.VMName).Distinct());
        Assert.Equal(7, rules.Count(r => r.VMName == "work"));
    }

    [Fact]
    public void NetVM_completion_offers_only_qubes_that_provide_network()
    {
        Assert.Equal(["sys-firewall", "sys-net", "sys-whonix"], Complete("Get-Qube -Root '$QubesRoot' -NetVM "));
        Assert.Equal(["sys-firewall", "sys-net", "sys-whonix"], Complete("Repair-QubeNetVm -Root '$QubesRoot' -NetVM "));
        Assert.Equal(["sys-net"], Complete("Get-Qube -Root '$QubesRoot' -NetVM sys-n"));
    }

    [Fact]
    public void Remove_QubeFirewallRule_Number_completion_offers_the_rule_numbers_of_the_qube()
    {
        Assert.Equal(["0", "1", "2", "3", "4", "5", "6"], Complete("Remove-QubeFirewallRule -Root '$QubesRoot' -VMName work -Number "));
        Assert.Equal(["0"], Complete("Remove-QubeFirewallRule -Root '$QubesRoot' -VMName untrusted -Number "));
        var tooltip = Run("$line = \"Remove-QubeFirewallRule -Root '$QubesRoot' -VMName work -Number 6\"; [System.Management.Automation.CommandCompletion]::CompleteInput($line, $line.Length, $null).CompletionMatches.ToolTip");
        Assert.Equal("action=drop", Assert.Single(tooltip.Output).ToString());
        Assert.Empty(Complete("Remove-QubeFirewallRule -Root '$QubesRoot' -Number "));
    }

    [Fact]
    public void Sync_says_who_enforces_in_the_audits_words_not_the_netvm_name_alone()
    {
        var run = Run("Sync-QubeFirewall anon-whonix -Verbose -Confirm:$false");
        run.AssertNoErrors();
        var audit = Run("Test-QubeFirewall anon-whonix -Severity Info").Of<AuditFinding>().Single();
        Assert.Contains(run.Verbose, v => audit.Message.StartsWith(v, StringComparison.Ordinal) && v.Contains("NOT enforced", StringComparison.Ordinal));
        Assert.DoesNotContain(run.Verbose, v => v.Contains("enforced in sys-whonix", StringComparison.Ordinal));
        Assert.Contains(run.Verbose, v => v.Contains("on target \"anon-whonix (NOT enforced: sys-whonix does not enforce them)\"", StringComparison.Ordinal));

        var work = Run("Sync-QubeFirewall work -Verbose -Confirm:$false");
        Assert.Contains("The rules of 'work' are enforced in 'sys-firewall' (for 10.137.0.11): its qubes-firewall service builds the qube's chain from them.", work.Verbose);
    }

    [Theory]
    [InlineData("Add-QubeFirewallRule -VMName vault -Rule action=drop", "'vault' has no network qube: its firewall rules are not used")]
    [InlineData("Add-QubeFirewallRule -VMName anon-whonix -Rule 'action=drop proto=udp'", "The rules of 'anon-whonix' are NOT enforced: its network qube 'sys-whonix' does not enforce them (it is a Whonix gateway")]
    public void Adding_rules_nobody_enforces_warns_with_the_audits_words(string script, string start)
    {
        var run = Run(script);
        run.AssertNoErrors();
        Assert.StartsWith(start, Assert.Single(run.Warnings));
        Assert.Empty(Run("Add-QubeFirewallRule -VMName work -Rule 'action=accept proto=tcp dstports=9'").Warnings);
    }

    [Fact]
    public void A_service_turned_off_on_the_netvm_warns_at_add_time_too()
    {
        using (var backend = new Engine.Backends.OfflineRoot(_root.Path)) backend.SetFeature("sys-firewall", "service.qubes-firewall", "");
        var run = Run("Add-QubeFirewallRule -VMName work -Rule 'action=accept proto=tcp dstports=9'");
        Assert.Contains("its qubes-firewall service is turned off", Assert.Single(run.Warnings));
    }

    [Theory]
    [InlineData("Add-QubeFirewallRule work -Rule 'action=accept proto=tcp dstports=1' -Verbose")]
    [InlineData("Remove-QubeFirewallRule work -Number 0 -Confirm:$false -Verbose")]
    [InlineData("'action=drop' | Set-QubeFirewallRule untrusted -Verbose")]
    [InlineData("Sync-QubeFirewall work -Verbose -Confirm:$false")]
    [InlineData("Add-QubeTcpBinding -From untrusted -To work -Port 444 -Verbose")]
    [InlineData("Add-QubeTcpBinding -From untrusted -To work -Port 444; Remove-QubeTcpBinding -From untrusted -To work -Port 444 -Confirm:$false -Verbose")]
    [InlineData("Set-QubeIPv6 work -Enabled $true -Verbose -WarningAction SilentlyContinue")]
    [InlineData("Repair-QubeNetVm -Confirm:$false -Verbose")]
    [InlineData("Add-QubePortForward work 443 -AllowFrom 10.0.0.0/8 -Verbose -WarningAction SilentlyContinue")]
    [InlineData("Enable-QubeInterVmNetwork -From work -To personal -Port 5432 -Verbose -WarningAction SilentlyContinue")]
    public void Verbose_says_each_thing_once(string script)
    {
        var run = Run(script);
        run.AssertNoErrors();
        Assert.NotEmpty(run.Verbose);
        Assert.Empty(run.Verbose.GroupBy(v => v).Where(g => g.Count() > 1).Select(g => g.Key));
        // a line does not say the same change twice either ("feature X of q: Applied. Set feature X of q.")
        Assert.DoesNotContain(run.Verbose, v => v.Contains(": Applied. ", StringComparison.Ordinal));
    }

    [Fact]
    public void Set_QubeIPv6_plans_the_links_and_forwards_it_affects_again_in_its_own_plan()
    {
        Run("Enable-QubeInterVmNetwork -From work -To personal -Port 5432 -WarningAction SilentlyContinue").AssertNoErrors();
        Assert.False(Assert.Single(Run("Get-QubeInterVmNetwork").Of<QubeInterVmLink>()).IPv6);

        var before = _root.Snapshot();
        // -WhatIf lists them (in the host); the same ShouldProcess steps, confirmed, are in -Verbose
        Run("Set-QubeIPv6 sys-net -Enabled $true -WhatIf -WarningAction SilentlyContinue").AssertNoErrors();
        _root.AssertUnchanged(before);
        var run = Run("Set-QubeIPv6 sys-net -Enabled $true -Verbose -Confirm:$false -WarningAction SilentlyContinue");
        run.AssertNoErrors();
        // One line of the uniform plan text.
        Assert.Contains(run.Verbose, v => v.StartsWith("Set IPv6 of sys-net:", StringComparison.Ordinal)
            && v.Contains("\n  2. link work -> personal tcp/5432: plan the link again for the IPv6 change (its IPv6 part follows the ipv6 features)", StringComparison.Ordinal));

        var link = Assert.Single(Run("Get-QubeInterVmNetwork").Of<QubeInterVmLink>());
        Assert.True(link.IPv6);
        Assert.True(link.IsComplete); // no part MISSING after IPv6 came on
        Assert.DoesNotContain(Run("Test-QubeFirewall work").Of<AuditFinding>(), f => f.Check == InterVmLinkAuditCheck.LinkIncomplete);
    }

    [Fact]
    public void IPv6_turned_on_behind_the_modules_back_shows_IPv4_only_parts_not_missing_ones_and_the_fix_adds_the_IPv6_half()
    {
        Run("Enable-QubeInterVmNetwork -From work -To personal -Port 5432 -WarningAction SilentlyContinue").AssertNoErrors();
        using (var backend = new Engine.Backends.OfflineRoot(_root.Path)) backend.SetFeature("sys-net", "ipv6", "1");

        var link = Assert.Single(Run("Get-QubeInterVmNetwork").Of<QubeInterVmLink>());
        Assert.Equal(["Forward", "Input", "Firewall"], link.IPv4OnlyParts);
        Assert.StartsWith("IPv6 was turned on along the link since it was made", link.Change);
        var finding = Assert.Single(Run("Test-QubeFirewall work").Of<AuditFinding>(), f => f.Check == InterVmLinkAuditCheck.LinkIncomplete);
        Assert.Equal(AuditSeverity.Warning, finding.Severity); // it works over IPv4
        Assert.StartsWith("The link work -> personal tcp/5432 works over IPv4 only", finding.Message);

        Run("& ([scriptblock]::Create($fix))", new Dictionary<string, object?> { ["fix"] = finding.Fix }).AssertNoErrors();
        Assert.True(Assert.Single(Run("Get-QubeInterVmNetwork").Of<QubeInterVmLink>()).IsComplete);
    }

    private PsRun Run(string script, IDictionary<string, object?> variables) => PowerShellHost.Run(script, _root.Path, variables);
}
