using System.Globalization;
using QubesFirewall.Engine.Model;
using QubesFirewall.TestQubesd;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// The 64 KiB request limit seen from the cmdlets on the live backend: a rule list that would not fit
/// one admin.vm.firewall.Set is refused before anything is sent, the error says how many rules fit, and
/// nothing is half-applied (a batch that does not fit adds none of its rules; another qube in the same
/// pipeline still gets its rules).
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class LiveFirewallLimitTests : IDisposable
{
    private readonly SampleRootCopy _root = new();
    private readonly LiveServer _live;
    private FakeQubesd Server => _live.Server;

    public LiveFirewallLimitTests()
    {
        _live = new LiveServer(_root.Path);
        // work: 1,090 rules of 60 bytes on the wire, then the catch-all "action=drop" (12 bytes).
        Server.EditRules("work", _ => [.. Enumerable.Range(0, 1090).Select(Rule60), "action=drop"]);
    }

    public void Dispose()
    {
        _live.Dispose();
        _root.Dispose();
    }

    private static string Rule60(int i)
    {
        var text = string.Create(CultureInfo.InvariantCulture, $"action=accept dst4=10.{100 + i / 100}.{100 + i % 100}.1/32 comment=rule {i:D5} ");
        return text + new string('x', 59 - text.Length);
    }

    private PsRun Run(string script) => _live.Run(script);

    // Header 38 + 1,090 * 60 + 12 = 65,450 bytes now; each added rule is 60 more: one fits (65,510), two do not (65,570).
    [Fact]
    public void One_more_rule_fits_the_next_is_refused_saying_how_many_fit_and_nothing_changes()
    {
        Run($"Add-QubeFirewallRule -VMName work -Rule '{Rule60(5000)}'").AssertNoErrors();
        Assert.Equal(1092, Server.RuleLines("work").Count);

        var before = Server.RuleLines("work");
        Server.ClearCalls();
        var run = Run($"Add-QubeFirewallRule -VMName work -Rule '{Rule60(5001)}'");
        var error = Assert.Single(run.Errors);
        Assert.Equal("FirewallRequestTooLarge,QubesFirewall.PowerShell.Cmdlets.AddQubeFirewallRuleCommand", error.FullyQualifiedErrorId);
        // [1,090 old] [5000] [5001] [drop]: 38 + 1,092 * 60 = 65,558 bytes before the catch-all, so 1,091 fit.
        Assert.Contains("The 1,093 rules of 'work'", error.ToString());
        Assert.Contains("only the first 1,091 of these rules would fit", error.ToString());
        Assert.Equal(0, Server.CountCalls("admin.vm.firewall.Set"));
        Assert.Equal(before, Server.RuleLines("work"));
    }

    [Fact]
    public void A_batch_that_does_not_fit_adds_none_of_its_rules_while_another_qube_gets_its_own()
    {
        var lines = string.Join(", ", new[] { 6000, 6001, 6002 }.Select(i => $"'{Rule60(i)}'"));
        var before = Server.RuleLines("work");
        var personalBefore = Server.RuleLines("personal").Count;
        var run = Run($"{lines} | Add-QubeFirewallRule -VMName work; {lines} | Add-QubeFirewallRule -VMName personal");
        var error = Assert.Single(run.Errors);
        Assert.StartsWith("FirewallRequestTooLarge,", error.FullyQualifiedErrorId);
        Assert.Contains("only the first 1,091 of these rules would fit", error.ToString());
        Assert.Equal(before, Server.RuleLines("work"));
        Assert.Equal(personalBefore + 3, Server.RuleLines("personal").Count);
        Assert.Equal(1, Server.CountCalls("admin.vm.firewall.Set"));
        Assert.Equal(0, Server.OversizedRequests);
    }
}
