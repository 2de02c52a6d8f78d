using System.Management.Automation.Language;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// A finding's Fix is a command of this module that runs, or empty. Every value in it is a validated name or a
/// single-quoted literal, so values of an unchecked offline root (a comment with ';', '$(', a backtick, quotes)
/// stay data: parsed with PowerShell's own parser, a Fix holds only the module's cmdlets.
/// </summary>
public sealed class AuditFixTests : IDisposable
{
    private readonly SampleRootCopy _root = new();

    public void Dispose() => _root.Dispose();

    private PsRun Run(string script) => PowerShellHost.Run(script, _root.Path);

    private static readonly Lazy<HashSet<string>> ModuleCmdlets = new(() =>
        PowerShellHost.Run("(Get-Command -Module QubesFirewall).Name").Output.Select(o => o.ToString()).ToHashSet(StringComparer.OrdinalIgnoreCase));

    /// <summary>Parses <paramref name="fix"/>: no parse error, at least one command, every command a cmdlet of the module, no code anywhere else.</summary>
    private static void AssertOnlyModuleCommands(string fix)
    {
        var ast = Parser.ParseInput(fix, out _, out var errors);
        Assert.True(errors.Length == 0, $"'{fix}' does not parse: {string.Join("; ", errors.Select(e => e.Message))}");
        var commands = ast.FindAll(a => a is CommandAst, true).Cast<CommandAst>().ToList();
        Assert.NotEmpty(commands);
        foreach (var command in commands)
            Assert.True(command.GetCommandName() is { } name && ModuleCmdlets.Value.Contains(name), $"'{command}' in '{fix}' is not a command of the module");
        Assert.Empty(ast.FindAll(a => a is SubExpressionAst or ExpandableStringExpressionAst or ScriptBlockExpressionAst or InvokeMemberExpressionAst
            or MemberExpressionAst or IndexExpressionAst or ConvertExpressionAst or AttributedExpressionAst, true));
        foreach (var variable in ast.FindAll(a => a is VariableExpressionAst, true).Cast<VariableExpressionAst>())
            Assert.Contains(variable.VariablePath.UserPath, new[] { "true", "false" });
    }

    [Theory]
    [InlineData("a; Remove-Item -Recurse /")]
    [InlineData("$(Remove-Item x)")]
    [InlineData("x`\"; y")]
    [InlineData("it's")]
    [InlineData("\u2018x\u2019; Remove-Item \u201Ay\u201B")]
    [InlineData("'")]
    public void The_quoting_function_gives_one_string_literal(string value)
    {
        var quoted = FixCommand.Quote(value);
        var ast = Parser.ParseInput(quoted, out _, out var errors);
        Assert.Empty(errors);
        var literal = Assert.IsType<StringConstantExpressionAst>(Assert.Single(ast.FindAll(a => a is StringConstantExpressionAst, true)));
        Assert.Equal(value, literal.Value);
        Assert.Equal(StringConstantType.SingleQuoted, literal.StringConstantType);
    }

    [Fact]
    public void Every_fix_on_the_sample_runs_and_resolves_its_finding()
    {
        // One of each kind of finding with a Fix, made the way users make them.
        Run("""
            Add-QubeFirewallRule -VMName work -Rule 'action=accept dst4=192.168.10.0/24 proto=tcp dstports=8080' -Position 7
            'action=accept dst4=10.0.0.0/0 proto=tcp dstports=80', 'action=accept dst6=2001:db8::/32' | Add-QubeFirewallRule -VMName untrusted
            'action=accept dst4=10.1.0.0/16', 'action=drop' | Set-QubeFirewallRule -VMName default-dvm
            Set-QubeIPv6 -VMName personal -Enabled $true -WarningAction SilentlyContinue
            Set-QubeIPv6 -VMName untrusted -Enabled $false
            Enable-QubeInterVmNetwork -From work -To personal -Port 5432 -WarningAction SilentlyContinue
            Get-QubeFirewallRule work | Where-Object { $_.Rule.Comment -eq 'qubesfirewall link to personal' } | Remove-QubeFirewallRule -Confirm:$false
            Add-QubePortForward -VMName work -Port 443 -AllowFrom 192.168.1.0/24 -WarningAction SilentlyContinue
            """).AssertNoErrors();
        // the managed block an earlier version left in sys-net (forwards now reach it as agent keys): a leftover
        using (var backend = new QubesFirewall.Engine.Backends.OfflineRoot(_root.Path))
        {
            var script = PortForwardPlanner.Export(backend.GetInventory(), "sys-net")!;
            backend.WriteQubeFile("sys-net", script.Path, QubesFirewall.Engine.Persistence.ManagedBlock.Upsert("#!/bin/sh\n", script.Script), QubesFirewall.Engine.Persistence.ManagedBlock.FileMode);
            // a stray key on a qube no forward or link reaches (a change rewrites only the qubes on its way): Sync-QubeFirewall's to repair
            backend.SetFeature("untrusted", "vm-config.qubesfw.tgt4.08080.tcp.0123456789", "for=untrusted gen=0123456789abcdef proto=tcp port=8080 to=8080 dst=10.137.0.12 src=any vm=untrusted");
        }
        File.WriteAllText(_root.FirewallXml("sys-whonix"), """
            <firewall version="2"><rules>
              <rule><properties><property name="action">accept</property><property name="proto">tcp</property><property name="dstports">65536</property></properties></rule>
              <rule><properties><property name="action">accept</property></properties></rule>
            </rules></firewall>
            """);

        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (var round = 0; round < 30; round++)
        {
            // -Deep: the leftover in sys-net's hook file is read only when asked
            var findings = Run("Test-QubeFirewall -Severity Info -Deep").Of<AuditFinding>().Where(f => f.Fix is not null).ToList();
            if (findings.Count == 0) break;
            // Turning IPv6 on plans the links and forwards again, which would repair them before their own fixes ran: last.
            var finding = findings.OrderBy(f => f.Check == AuditChecks.IPv6WithoutUplink).First();
            var key = $"{finding.VMName} {finding.Check} {finding.Number} {finding.Fix}";
            Assert.True(seen.Add(key), $"the fix did not resolve its finding: {key}");
            AssertOnlyModuleCommands(finding.Fix!);
            var fix = new Dictionary<string, object?> { ["fix"] = finding.Fix };
            var run = PowerShellHost.Run("$WarningPreference = 'SilentlyContinue'; & ([scriptblock]::Create($fix))", _root.Path, fix);
            run.AssertNoErrors();
        }
        Assert.DoesNotContain(Run("Test-QubeFirewall -Severity Info -Deep").Of<AuditFinding>(), f => f.Fix is not null);
        // Each kind was met and fixed.
        var checks = seen.Select(k => k.Split(' ')[1]).ToHashSet();
        var expected = new[] { AuditChecks.DeadRule, AuditChecks.ZeroPrefix, AuditChecks.IPv6Rule, AuditChecks.QubeManagerShape,
            AuditChecks.IPv6WithoutUplink, AuditChecks.InvalidRule, InterVmLinkAuditCheck.LinkIncomplete, ForwardAuditChecks.UndeclaredPart,
            QubesFirewall.Engine.Agent.AgentAuditCheck.AgentKeysStale };
        Assert.True(expected.All(checks.Contains), "fixed: " + string.Join(" | ", seen));
    }

    [Fact]
    public void A_netvm_changed_under_a_forward_is_found_on_every_former_hop_sys_net_included_and_each_fix_runs_without_error()
    {
        Run("Add-QubePortForward -VMName work -Port 443 -AllowFrom 192.168.1.0/24").AssertNoErrors();
        // qvm-prefs work netvm sys-net: sys-firewall is off the way now, and sys-net, which has no netvm itself, must forward to work
        using (var backend = new QubesFirewall.Engine.Backends.OfflineRoot(_root.Path)) backend.SetProperty("work", "netvm", "sys-net");

        var stale = Run("Test-QubeFirewall").Of<AuditFinding>().Where(f => f.Check == QubesFirewall.Engine.Agent.AgentAuditCheck.AgentKeysStale).ToList();
        Assert.Equal(["sys-firewall", "sys-net"], stale.Select(f => f.VMName).Order(StringComparer.Ordinal));
        foreach (var finding in stale)
        {
            // sys-net has no netvm, so it has no firewall to sync: its fix syncs its keys and reports no error
            var run = PowerShellHost.Run("& ([scriptblock]::Create($fix))", _root.Path, new Dictionary<string, object?> { ["fix"] = finding.Fix });
            run.AssertNoErrors();
        }
        Assert.DoesNotContain(Run("Test-QubeFirewall").Of<AuditFinding>(), f => f.Check == QubesFirewall.Engine.Agent.AgentAuditCheck.AgentKeysStale);
        var workIp = Run("(Get-Qube work).IP").Output.Single().ToString();
        var features = Run("Get-Qube sys-net").Of<QubesFirewall.Engine.Model.Qube>().Single().Features;
        var part = features.Keys.Single(k => k.StartsWith("vm-config.qubesfw.hop4.00443.", StringComparison.Ordinal));
        Assert.Contains($" nat={workIp} ", features[part], StringComparison.Ordinal); // sys-net now sends the port straight to work
        Assert.DoesNotContain(Run("Get-Qube sys-firewall").Of<QubesFirewall.Engine.Model.Qube>().Single().Features.Keys, k => k.StartsWith("vm-config.qubesfw.hop", StringComparison.Ordinal));
    }

    [Fact]
    public void Hostile_values_of_an_offline_root_give_fixes_that_only_run_module_cmdlets()
    {
        // Comments qubesd accepts (';' is one of its characters) and values only an edited file holds.
        static string Rule(params (string Name, string Value)[] p) =>
            "<rule><properties>" + string.Concat(p.Select(x => $"<property name=\"{x.Name}\">{System.Security.SecurityElement.Escape(x.Value)}</property>")) + "</properties></rule>";
        File.WriteAllText(_root.FirewallXml("work"), "<firewall version=\"2\"><rules>" +
            Rule(("action", "accept"), ("proto", "tcp"), ("dstports", "22"), ("comment", "a; Remove-Item -Recurse /; b")) +
            Rule(("action", "accept"), ("dsthost", "10.0.0.0/0"), ("comment", "x;y")) +
            Rule(("action", "drop")) +
            Rule(("action", "accept"), ("proto", "tcp"), ("dstports", "443"), ("comment", "$(Remove-Item -Recurse /)")) +
            Rule(("action", "accept"), ("proto", "udp"), ("dstports", "53"), ("comment", "it's `$x` \u2019; Remove-Item /")) +
            Rule(("action", "accept"), ("dsthost", "evil;$(rm -rf /)'\u2018")) +
            Rule(("action", "accept"), ("proto", "tcp"), ("dstports", "8080"), ("comment", "z; Get-Process")) +
            "</rules></firewall>");
        var findings = Run("Test-QubeFirewall work -Severity Info").Of<AuditFinding>().ToList();
        var fixes = findings.Where(f => f.Fix is not null).Select(f => f.Fix!).Distinct().ToList();
        Assert.Contains(findings, f => f.Check == AuditChecks.InvalidRule);
        Assert.Contains(findings, f => f.Check == AuditChecks.DeadRule);
        Assert.Contains(findings, f => f.Check == AuditChecks.ZeroPrefix);
        Assert.Contains(fixes, f => f.Contains("Remove-Item -Recurse /", StringComparison.Ordinal)); // the hostile text is in there, as data
        foreach (var fix in fixes) AssertOnlyModuleCommands(fix);
        // Run, the invalid-rule fix sets the list without the invalid rules; the comments stay what they were.
        var invalid = findings.First(f => f.Check == AuditChecks.InvalidRule).Fix!;
        PowerShellHost.Run("& ([scriptblock]::Create($fix))", _root.Path, new Dictionary<string, object?> { ["fix"] = invalid }).AssertNoErrors();
        var comments = Run("(Get-QubeFirewallRule work).Comment").Output.Select(o => o?.ToString()).ToList();
        Assert.Contains("a; Remove-Item -Recurse /; b", comments);
        Assert.Contains("z; Get-Process", comments);
    }
}
