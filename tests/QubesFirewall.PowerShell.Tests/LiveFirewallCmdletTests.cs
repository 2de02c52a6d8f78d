using System.Management.Automation;
using QubesFirewall.Engine.Model;
using QubesFirewall.TestQubesd;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// The cmdlet tests on the live backend: the runspace has $env:QUBESFW_QUBESD_SOCKET pointing at the
/// stand-in qubesd (serving a copy of the sample root) and no QUBESFW_ROOT. Plus what only the live
/// backend does: call counts, refusals qubesd sends, a change made by someone else meanwhile.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class LiveFirewallCmdletTests : FirewallCmdletTests
{
    private readonly LiveServer _live;
    private FakeQubesd Server => _live.Server;

    public LiveFirewallCmdletTests()
    {
        _live = new LiveServer(_root.Path);
    }

    public override void Dispose()
    {
        _live.Dispose();
        base.Dispose();
    }

    protected override PsRun Run(string script) => _live.Run(script);

    [Fact]
    public void The_live_backend_is_the_one_used()
    {
        var run = Run("Get-Qube work -Verbose");
        run.AssertNoErrors();
        Assert.Contains($"Using qubesd at {Server.SocketPath}.", run.Verbose);
        Assert.NotEmpty(Server.Calls);
    }

    [Fact]
    public void WhatIf_lists_every_call_and_payload_it_would_send_and_sends_none()
    {
        Server.ClearCalls();
        var run = Run("'action=drop dsthost=198.51.100.77' | Add-QubeFirewallRule -VMName work -WhatIf; Sync-QubeFirewall work -WhatIf");
        run.AssertNoErrors();
        var set = Assert.Single(run.Information, i => i.StartsWith("What if: would send admin.vm.firewall.Set+ dom0 name work with payload:", StringComparison.Ordinal));
        var payload = set.Split('\n').Skip(1).Where(l => l.Length > 0).ToList();
        Assert.Contains("action=drop dst4=198.51.100.77/32", payload);
        Assert.Equal("action=drop", payload[^1]);
        Assert.Contains(run.Information, i => i == "What if: would send admin.vm.firewall.Reload+ dom0 name work");
        Assert.DoesNotContain(Server.Calls, c => !c.Method.EndsWith(".Get", StringComparison.Ordinal) && !c.Method.EndsWith(".GetAll", StringComparison.Ordinal) && !c.Method.EndsWith(".List", StringComparison.Ordinal));
        Assert.DoesNotContain("198.51.100.77", File.ReadAllText(_root.FirewallXml("work")));
    }

    [Fact]
    public void Work_over_several_qubes_reports_progress()
    {
        var run = Run("'work', 'personal', 'untrusted' | ForEach-Object { [pscustomobject]@{ VMName = $_; Action = 'Drop'; DstHost = '203.0.113.9' } } | Add-QubeFirewallRule");
        run.AssertNoErrors();
        Assert.Equal(["work (1 of 3)", "personal (2 of 3)", "untrusted (3 of 3)"], run.Progress.Where(p => p.RecordType == ProgressRecordType.Processing).Select(p => p.StatusDescription));
        Assert.Equal(ProgressRecordType.Completed, run.Progress[^1].RecordType);
    }

    [Fact]
    public void Verbose_output_says_how_many_calls_an_invocation_made()
    {
        var run = Run("Get-QubeFirewallRule work -Verbose");
        run.AssertNoErrors();
        Assert.Contains($"1 Admin API call(s) to qubesd at {Server.SocketPath}.", run.Verbose);
    }

    [Fact]
    public void Rules_piped_into_one_add_cost_three_calls_per_qube_whatever_the_count()
    {
        var lines = string.Join(", ", Enumerable.Range(1, 20).Select(i => $"'action=accept dst4=10.77.0.{i} proto=tcp dstports=443'"));
        Server.ClearCalls();
        var run = Run($"{lines} | Add-QubeFirewallRule -VMName work; {lines} | Add-QubeFirewallRule -VMName personal");
        run.AssertNoErrors();
        // Three firewall calls per qube, whatever the count; besides them, the inventory once per invocation (who enforces the
        // rules, for the warning when nobody does): admin.vm.List and the properties, never per rule.
        Assert.Equal(["admin.vm.firewall.Get", "admin.vm.firewall.Get", "admin.vm.firewall.Set"], Server.Calls.Where(c => c.Destination == "work" && c.Method.StartsWith("admin.vm.firewall.", StringComparison.Ordinal)).Select(c => c.Method));
        Assert.Equal(["admin.vm.firewall.Get", "admin.vm.firewall.Get", "admin.vm.firewall.Set"], Server.Calls.Where(c => c.Destination == "personal" && c.Method.StartsWith("admin.vm.firewall.", StringComparison.Ordinal)).Select(c => c.Method));
        Assert.Equal(6, Server.Calls.Count(c => c.Method.StartsWith("admin.vm.firewall.", StringComparison.Ordinal)));
        Assert.Equal(2, Server.CountCalls("admin.vm.List"));
        Assert.Equal(20, Server.RuleLines("work").Count(l => l.Contains("10.77.0.", StringComparison.Ordinal)));
    }

    [Fact]
    public void Piped_removals_cost_three_calls()
    {
        Run("'action=drop dsthost=a.example', 'action=drop dsthost=b.example', 'action=drop dsthost=c.example' | Add-QubeFirewallRule -VMName work").AssertNoErrors();
        var rules = Run("Get-QubeFirewallRule work").Of<QubeFirewallRule>().Where(r => r.DstHost is "a.example" or "c.example").ToList();
        Server.ClearCalls();
        var run = PowerShellHost.Run("$rules | Remove-QubeFirewallRule -Confirm:$false", variables: new Dictionary<string, object?> { ["rules"] = rules },
            environment: new Dictionary<string, string> { ["QUBESFW_ROOT"] = "", ["QUBESFW_QUBESD_SOCKET"] = Server.SocketPath });
        run.AssertNoErrors();
        Assert.Equal(["admin.vm.firewall.Get", "admin.vm.firewall.Get", "admin.vm.firewall.Set"], Server.Calls.Select(c => c.Method));
    }

    [Fact]
    public void Get_Qube_reads_the_inventory_once()
    {
        Server.ClearCalls();
        var run = Run("Get-Qube; Get-Qube -Name 'sys-*'");
        run.AssertNoErrors();
        var names = run.Of<Qube>().Select(q => q.Name).ToList();
        var qubes = names.Distinct().Count();
        var matching = names.Count - qubes; // what the second invocation wrote
        Assert.Equal(4, matching); // sys-firewall, sys-net, sys-usb, sys-whonix
        // Two invocations: each one admin.vm.List and one GetAll per qube it lists (sys-* reads only those).
        Assert.Equal((1 + qubes) + (1 + matching), Server.Calls.Count);
    }

    [Fact]
    public void A_change_made_by_someone_else_between_the_plan_and_the_reread_is_refused()
    {
        var gets = 0;
        Server.AfterCall = (server, call) =>
        {
            if (call.Method == "admin.vm.firewall.Get" && call.Destination == "work" && ++gets == 1)
                server.EditRules("work", rules => { rules.Insert(0, "action=drop dst4=192.0.2.99"); return rules; });
        };
        var run = Run("'action=accept dst4=10.20.0.0/16' | Add-QubeFirewallRule -VMName work");
        var error = Assert.Single(run.Errors);
        Assert.Equal("FirewallChangedSinceRead,QubesFirewall.PowerShell.Cmdlets.AddQubeFirewallRuleCommand", error.FullyQualifiedErrorId);
        Assert.Contains("192.0.2.99", error.ToString());
        Assert.DoesNotContain(Server.RuleLines("work"), l => l.Contains("10.20.0.0", StringComparison.Ordinal));
        Assert.Equal(0, Server.CountCalls("admin.vm.firewall.Set"));
    }

    [Fact]
    public void A_refusal_from_qubesd_names_its_class()
    {
        var before = _root.Snapshot();
        Server.InjectFault(new Fault(FaultKind.ExceptionReply, "admin.vm.firewall.Set", ExceptionClass: "QubesException", Message: "firewall locked by policy"));
        var run = Run("Add-QubeFirewallRule -VMName work -Rule 'action=accept dst4=10.20.0.0/16'");
        var error = Assert.Single(run.Errors);
        Assert.StartsWith("QubesdError,", error.FullyQualifiedErrorId);
        Assert.Contains("QubesException: firewall locked by policy", error.ToString());
        _root.AssertUnchanged(before);
    }

    [Fact]
    public void An_empty_reply_is_said_in_plain_words()
    {
        Server.InjectFault(new Fault(FaultKind.EmptyReply, "admin.vm.firewall.Set"));
        var run = Run("Add-QubeFirewallRule -VMName work -Rule 'action=accept dst4=10.20.0.0/16'");
        var error = Assert.Single(run.Errors);
        Assert.StartsWith("QubesdEmptyReply,", error.FullyQualifiedErrorId);
        Assert.Contains("qubesd refused the request without a reason", error.ToString());
    }

    [Fact]
    public void Sync_asks_qubesd_to_reload()
    {
        Server.ClearCalls();
        Run("Sync-QubeFirewall work, personal").AssertNoErrors();
        Assert.Equal(["work", "personal"], Server.Calls.Where(c => c.Method == "admin.vm.firewall.Reload").Select(c => c.Destination));
    }

    [Fact]
    public void Qube_names_complete_from_one_list_call()
    {
        Server.ClearCalls();
        var run = Run("""
            $line = "Get-QubeFirewallRule -VMName sys-f"
            (TabExpansion2 -inputScript $line -cursorColumn $line.Length).CompletionMatches.CompletionText
            """);
        run.AssertNoErrors();
        Assert.Equal(["sys-firewall"], run.Output.Select(o => o.ToString()));
        Assert.Equal(["admin.vm.List"], Server.Calls.Select(c => c.Method));
    }
}
