using System.Collections;
using System.Globalization;
using System.Management.Automation;
using System.Management.Automation.Language;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.PowerShell;

/// <summary>Completes a -NetVM parameter with the qubes that can be one: they provide network, and are neither templates nor dom0.</summary>
public sealed class NetworkQubeCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters)
    {
        var prefix = wordToComplete.Trim('\'', '"');
        List<string> names;
        try
        {
            using var backend = BackendSelector.Open(fakeBoundParameters["Root"] as string);
            names = backend.GetInventory().Qubes
                .Where(q => q.ProvidesNetwork && q.Class is not (QubeClass.TemplateVM or QubeClass.AdminVM or QubeClass.RemoteVM))
                .Select(q => q.Name).ToList();
        }
        catch (Exception)
        {
            return []; // completion never throws at the user
        }
        return names.Where(n => n.StartsWith(prefix, StringComparison.OrdinalIgnoreCase)).Order(StringComparer.Ordinal)
            .Select(n => new CompletionResult(n, n, CompletionResultType.ParameterValue, n));
    }
}

/// <summary>Completes Remove-QubeFirewallRule's -Number with the numbers of the rules of the qube given as -VMName, each with its text.</summary>
public sealed class RuleNumberCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters)
    {
        if (fakeBoundParameters["VMName"] is not string vm) return [];
        List<QubeFirewallRule> rules;
        try
        {
            using var backend = BackendSelector.Open(fakeBoundParameters["Root"] as string);
            rules = QubeFirewallRule.Visible(vm, backend.GetFirewall(vm).Rules, DateTimeOffset.UtcNow).ToList();
        }
        catch (Exception)
        {
            return [];
        }
        return rules
            .Select(r => (Text: r.Number.ToString(CultureInfo.InvariantCulture), Rule: r))
            .Where(x => x.Text.StartsWith(wordToComplete, StringComparison.Ordinal))
            .Select(x => new CompletionResult(x.Text, $"{x.Text}: {x.Rule.Text}", CompletionResultType.ParameterValue, x.Rule.Text));
    }
}
