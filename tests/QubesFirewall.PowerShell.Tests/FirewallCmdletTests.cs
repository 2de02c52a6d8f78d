using System.Management.Automation;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// The first cmdlets through a hosted runspace: binding, pipeline, WhatIf, errors. Every test runs
/// against both backends with the same expectations: <see cref="OfflineFirewallCmdletTests"/> (an
/// offline root) and <see cref="LiveFirewallCmdletTests"/> (the live backend on the stand-in qubesd
/// serving the same sample root, which writes its changes back to that root as qubesd does).
/// </summary>
public abstract class FirewallCmdletTests : IDisposable
{
    protected readonly SampleRootCopy _root = new();

    public virtual void Dispose() => _root.Dispose();

    /// <summary>Runs a script with this backend selected through the environment.</summary>
    protected abstract PsRun Run(string script);

    [Fact]
    public void Get_Qube_lists_the_sample_with_network_settings()
    {
        var run = Run("Get-Qube");
        run.AssertNoErrors();
        var qubes = run.Of<Qube>().ToDictionary(q => q.Name);
        foreach (var name in new[] { "sys-net", "sys-firewall", "sys-usb", "work", "personal", "untrusted", "vault", "sys-whonix", "anon-whonix" })
            Assert.Contains(name, qubes.Keys);
        Assert.Equal("sys-firewall", qubes["work"].NetVM);
        Assert.Null(qubes["vault"].NetVM);
        Assert.Equal("sys-whonix", qubes["anon-whonix"].NetVM);
        Assert.True(qubes["sys-net"].ProvidesNetwork);
    }

    [Fact]
    public void Get_Qube_filters_by_wildcard_and_netvm_and_reports_unknown_names()
    {
        var run = Run("Get-Qube -Name 'sys-*' -NetVM sys-net");
        run.AssertNoErrors();
        Assert.Equal(["sys-firewall"], run.Of<Qube>().Select(q => q.Name));

        var missing = Run("Get-Qube -Name nosuchqube");
        Assert.Equal("QubeNotFound,QubesFirewall.PowerShell.Cmdlets.GetQubeCommand", Assert.Single(missing.Errors).FullyQualifiedErrorId);
    }

    [Fact]
    public void Get_Qube_pipes_into_Get_QubeFirewallRule()
    {
        var run = Run("Get-Qube work | Get-QubeFirewallRule");
        run.AssertNoErrors();
        var rules = run.Of<QubeFirewallRule>().ToList();
        Assert.NotEmpty(rules);
        Assert.All(rules, r => Assert.Equal("work", r.VMName));
        Assert.Equal(Enumerable.Range(0, rules.Count), rules.Select(r => r.Number));
        Assert.True(rules[^1].IsCatchAll);
    }

    [Fact]
    public void Text_lines_from_the_pipeline_go_before_the_catch_all_in_one_write()
    {
        var before = Run("Get-QubeFirewallRule work").Of<QubeFirewallRule>().Select(r => r.Text).ToList();
        var run = Run("'action=accept dsthost=10.20.0.0/16 proto=tcp dstports=22', '', '# a comment line', 'action=accept dsthost=example.com proto=udp dstports=53' | Add-QubeFirewallRule -VMName work -PassThru");
        run.AssertNoErrors();
        Assert.Equal(2, run.Of<QubeFirewallRule>().Count());
        var after = Run("Get-QubeFirewallRule work").Of<QubeFirewallRule>().Select(r => r.Text).ToList();
        Assert.Equal(before.Count + 2, after.Count);
        Assert.Equal(before[^1], after[^1]);
        Assert.Equal("action=accept dst4=10.20.0.0/16 proto=tcp dstports=22-22", after[^3]);
        Assert.Equal("action=accept dsthost=example.com proto=udp dstports=53-53", after[^2]);
    }

    [Fact]
    public void Objects_from_csv_bind_by_property_name()
    {
        // What Import-Csv gives: every property a string, missing values empty.
        var run = Run("""
            [pscustomobject]@{ VMName = 'work'; Action = 'Accept'; Protocol = 'Tcp'; DstHost = '10.5.0.0/16'; DstPorts = '8443'; IcmpType = ''; Position = ''; Comment = 'from csv' },
            [pscustomobject]@{ VMName = 'personal'; Action = 'Drop'; Protocol = ''; DstHost = '203.0.113.7'; DstPorts = ''; IcmpType = ''; Position = ''; Comment = '' } |
                Add-QubeFirewallRule -PassThru
            """);
        run.AssertNoErrors();
        var added = run.Of<QubeFirewallRule>().ToList();
        Assert.Contains(added, r => r.VMName == "work" && r.Text == "action=accept dst4=10.5.0.0/16 proto=tcp dstports=8443-8443 comment=from csv");
        Assert.Contains(added, r => r.VMName == "personal" && r.Text == "action=drop dst4=203.0.113.7/32");
    }

    [Fact]
    public void Rules_piped_from_one_qube_copy_to_another()
    {
        var run = Run("Get-QubeFirewallRule work | Add-QubeFirewallRule -VMName untrusted -Position 0 -PassThru");
        run.AssertNoErrors();
        var work = Run("Get-QubeFirewallRule work").Of<QubeFirewallRule>().Select(r => r.Text).ToList();
        var untrusted = Run("Get-QubeFirewallRule untrusted").Of<QubeFirewallRule>().Select(r => r.Text).ToList();
        Assert.Equal(work, untrusted.Take(work.Count));
    }

    [Fact]
    public void Position_and_expire_parameters()
    {
        var run = Run("Add-QubeFirewallRule -VMName work -Action Drop -DstHost 198.51.100.0/24 -Position 0 -Expire ([timespan]::FromHours(2)) -Comment 'temp block' -PassThru");
        run.AssertNoErrors();
        var rule = Assert.Single(run.Of<QubeFirewallRule>());
        Assert.Equal(0, rule.Number);
        Assert.NotNull(rule.Expire);
        Assert.InRange(rule.Expire!.Value, DateTime.Now.AddHours(2).AddMinutes(-1), DateTime.Now.AddHours(2).AddMinutes(1));
        Assert.Equal(rule.Text, Run("Get-QubeFirewallRule work").Of<QubeFirewallRule>().First().Text);
    }

    [Fact]
    public void WhatIf_changes_nothing_and_each_rule_is_a_ShouldProcess_step()
    {
        var before = _root.Snapshot();
        var run = Run("'action=drop dsthost=a.example', 'action=drop dsthost=b.example' | Add-QubeFirewallRule -VMName work -WhatIf; Remove-QubeFirewallRule -VMName work -Number 0 -WhatIf");
        run.AssertNoErrors();
        _root.AssertUnchanged(before);
        var confirm = Run("'action=drop dsthost=a.example', 'action=drop dsthost=b.example' | Add-QubeFirewallRule -VMName work -Verbose -Confirm:$false");
        // One ShouldProcess for the qube's plan, each rule a line of it (the uniform plan text).
        Assert.Equal(2, Assert.Single(confirm.Verbose, v => v.StartsWith("Add firewall rules to work:", StringComparison.Ordinal))
            .Split('\n').Count(l => l.Contains("Add firewall rule as number", StringComparison.Ordinal)));
    }

    [Fact]
    public void The_plan_text_is_the_verbose_line_with_Verbose_bound_by_default_values_and_not_with_the_preference_alone()
    {
        // ShouldProcess writes its description as a verbose line only for the -Verbose switch (given, or bound through
        // $PSDefaultParameterValues); the cmdlet makes the text only then (or under -WhatIf), so both must still show it.
        var byDefault = Run("$PSDefaultParameterValues['Add-QubeFirewallRule:Verbose'] = $true; 'action=drop dsthost=a.example', 'action=drop dsthost=b.example' | Add-QubeFirewallRule -VMName work");
        byDefault.AssertNoErrors();
        var text = Assert.Single(byDefault.Verbose, v => v.StartsWith("Add firewall rules to work:", StringComparison.Ordinal));
        Assert.Contains("\n       Add firewall rule as number 6: work: action=drop dsthost=a.example", text, StringComparison.Ordinal);
        Assert.Contains("\n       Add firewall rule as number 7: work: action=drop dsthost=b.example", text, StringComparison.Ordinal);

        var preference = Run("$VerbosePreference = 'Continue'; 'action=drop dsthost=c.example' | Add-QubeFirewallRule -VMName work");
        preference.AssertNoErrors();
        Assert.NotEmpty(preference.Verbose); // the cmdlet's own verbose lines
        Assert.DoesNotContain(preference.Verbose, v => v.Contains("Add firewall rule as number", StringComparison.Ordinal));
        Assert.Contains("action=drop dsthost=c.example", Run("Get-QubeFirewallRule work").Of<QubeFirewallRule>().Select(r => r.Text));
    }

    [Theory]
    [InlineData("Add-QubeFirewallRule -VMName work -Action Accept -DstHost 1.2.3.4/33", "InvalidDstHost")]
    [InlineData("Add-QubeFirewallRule -VMName work -Action Accept -Protocol Tcp -DstPorts 70000", "InvalidDstPorts")]
    [InlineData("Add-QubeFirewallRule -VMName work -Action Accept -Protocol Tcp -IcmpType 8", "IcmpTypeNeedsIcmp")]
    [InlineData("Add-QubeFirewallRule -VMName work -Action Accept -Comment 'it''s'", "InvalidComment")]
    [InlineData("Add-QubeFirewallRule -VMName work -Action Accept -Comment \"two`nlines\"", "InvalidComment")]
    [InlineData("Add-QubeFirewallRule -VMName work -Action Accept -Comment 'café'", "InvalidComment")]
    [InlineData("Add-QubeFirewallRule -VMName 'work;reboot' -Action Accept", "InvalidQubeName")]
    [InlineData("Add-QubeFirewallRule -VMName work -Rule 'action=accept dsthost=1.2.3.4/33'", "InvalidRuleText")]
    [InlineData("'action=accept proto=tcp dstports=80', 'action=accept proto=tcp dstports=70000' | Add-QubeFirewallRule -VMName work", "InvalidRuleText")]
    [InlineData("Add-QubeFirewallRule -VMName work -Action Accept -Expire ([datetime]'2001-01-01')", "ExpireInPast")]
    [InlineData("Add-QubeFirewallRule -VMName work -Action Accept -DstHost 10.0.0.1 -Position 99", "PositionOutOfRange")]
    [InlineData("Remove-QubeFirewallRule -VMName work -Number 99 -Confirm:$false", "RuleNumberOutOfRange")]
    [InlineData("Get-QubeFirewallRule -VMName 'a;b'", "InvalidQubeName")]
    [InlineData("Sync-QubeFirewall -VMName vault", "NoNetVM")]
    public void Bad_input_is_refused_with_its_error_id_and_changes_nothing(string script, string errorId)
    {
        var before = _root.Snapshot();
        var run = Run(script);
        Assert.NotEmpty(run.Errors);
        Assert.StartsWith(errorId + ",", run.Errors[0].FullyQualifiedErrorId);
        _root.AssertUnchanged(before);
    }

    [Fact]
    public void Piped_rule_objects_are_removed_exactly()
    {
        Run("'action=drop dsthost=a.example', 'action=drop dsthost=b.example', 'action=drop dsthost=c.example' | Add-QubeFirewallRule -VMName work").AssertNoErrors();
        var run = Run("Get-QubeFirewallRule work | Where-Object DstHost -in 'a.example', 'c.example' | Remove-QubeFirewallRule -Confirm:$false -PassThru");
        run.AssertNoErrors();
        Assert.Equal(["a.example", "c.example"], run.Of<QubeFirewallRule>().Select(r => r.DstHost));
        var left = Run("Get-QubeFirewallRule work").Of<QubeFirewallRule>().Select(r => r.DstHost).ToList();
        Assert.Contains("b.example", left);
        Assert.DoesNotContain("a.example", left);
        Assert.DoesNotContain("c.example", left);
    }

    [Fact]
    public void A_piped_rule_whose_number_moved_is_refused_not_guessed()
    {
        var before = _root.Snapshot();
        var run = Run("""
            $rules = Get-QubeFirewallRule work
            Add-QubeFirewallRule -VMName work -Action Drop -DstHost 192.0.2.1 -Position 0
            $rules | Select-Object -Last 1 | Remove-QubeFirewallRule -Confirm:$false
            """);
        Assert.Equal("RuleMismatch,QubesFirewall.PowerShell.Cmdlets.RemoveQubeFirewallRuleCommand", Assert.Single(run.Errors).FullyQualifiedErrorId);
        Assert.Contains("192.0.2.1", File.ReadAllText(_root.FirewallXml("work")));
        Assert.NotEqual(before[_root.FirewallXml("work")], File.ReadAllBytes(_root.FirewallXml("work")));
    }

    [Fact]
    public void Sync_writes_and_returns_the_network_qubes_entries()
    {
        var run = Run("Sync-QubeFirewall -VMName work -PassThru");
        run.AssertNoErrors();
        var entries = run.Of<QubesDbEntry>().ToList();
        Assert.All(entries, e => Assert.Equal("sys-firewall", e.QubeName));
        var ip = Run("(Get-Qube work).IP").Output.Single().BaseObject as string;
        Assert.Equal($"/qubes-firewall/{ip}/policy", entries[0].Path);
        Assert.Equal("drop", entries[0].Value);
        Assert.Equal($"/qubes-firewall/{ip}", entries[^1].Path);
        Assert.Equal("", entries[^1].Value);
        var stored = File.ReadAllText(Path.Combine(_root.Path, "qubesfirewall-state", "sys-firewall", "qubesdb.txt"));
        foreach (var e in entries) Assert.Contains($"{e.Path}\t{e.Value}\n", stored);
    }

    [Fact]
    public void Sync_after_removing_rules_leaves_no_stale_keys()
    {
        Run("Sync-QubeFirewall work").AssertNoErrors();
        Run("Get-QubeFirewallRule work | Where-Object { -not $_.IsCatchAll } | Remove-QubeFirewallRule -Confirm:$false").AssertNoErrors();
        var entries = Run("Sync-QubeFirewall work -PassThru").Of<QubesDbEntry>().ToList();
        var stored = File.ReadAllLines(Path.Combine(_root.Path, "qubesfirewall-state", "sys-firewall", "qubesdb.txt"));
        var ip = Run("(Get-Qube work).IP").Output.Single().BaseObject as string;
        Assert.Equal(entries.Select(e => $"{e.Path}\t{e.Value}").Order(StringComparer.Ordinal), stored.Where(l => l.StartsWith($"/qubes-firewall/{ip}/", StringComparison.Ordinal) || l.StartsWith($"/qubes-firewall/{ip}\t", StringComparison.Ordinal)));
        Assert.Equal(3, entries.Count);
    }
}

/// <summary>The cmdlet tests on an offline root, plus what only concerns backend selection.</summary>
public sealed class OfflineFirewallCmdletTests : FirewallCmdletTests
{
    protected override PsRun Run(string script) => PowerShellHost.Run(script, _root.Path);

    [Fact]
    public void Without_a_root_or_qubesd_the_error_says_how_to_point_at_one()
    {
        var run = PowerShellHost.Run("$env:QUBESFW_ROOT = $null; $env:QUBESFW_QUBESD_SOCKET = '/nonexistent/qubesd.sock'; Get-Qube");
        var error = Assert.Single(run.Errors);
        Assert.StartsWith("NoBackend,", error.FullyQualifiedErrorId);
        Assert.Contains("-Root", error.ToString());
        Assert.Contains("QUBESFW_ROOT", error.ToString());
    }

    [Fact]
    public void Root_parameter_wins_over_the_environment()
    {
        var run = PowerShellHost.Run($"$env:QUBESFW_ROOT = '/nonexistent'; Get-Qube -Root '{_root.Path}' -Name work");
        run.AssertNoErrors();
        Assert.Equal("work", Assert.Single(run.Of<Qube>()).Name);
    }

    [Fact]
    public void Qube_names_complete()
    {
        var run = PowerShellHost.Run($$"""
            $line = "Get-QubeFirewallRule -Root '{{_root.Path}}' -VMName sys-f"
            (TabExpansion2 -inputScript $line -cursorColumn $line.Length).CompletionMatches.CompletionText
            """);
        run.AssertNoErrors();
        Assert.Equal(["sys-firewall"], run.Output.Select(o => o.ToString()));
    }
}
