using System.Text;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.Engine.Tests.Deployment;

public class DeploymentStepTextTests
{
    private static DeploymentStep Step(string description, string? detail) => new()
    {
        Kind = DeploymentStepKind.RunScript,
        VMName = "sys-net",
        Description = description,
        Detail = detail,
    };

    [Fact]
    public void The_step_list_numbers_steps_and_indents_each_detail_line_with_its_tabs_replaced()
    {
        var sb = new StringBuilder("Plan:");
        DeploymentStep.AppendList(sb, [
            Step("first", "a\tb\t\tc\n\nd\n\n"),
            Step("second", null),
            Step("third", ""),
            Step("fourth", "\tonly"),
        ], tab: "--");
        Assert.Equal(
            "Plan:" +
            "\n  1. first\n       a--b----c\n       \n       d" +
            "\n  2. second" +
            "\n  3. third\n       " +
            "\n  4. fourth\n       --only",
            sb.ToString());
    }

    [Fact]
    public void A_rule_list_edit_lists_each_rule_as_action_and_target()
    {
        var snapshot = new FirewallDocument([RuleText.Parse("action=drop")], 2, true);
        var change = FirewallPlanner.PlanInsert(snapshot, "work",
            [new RuleInsertion(RuleText.Parse("action=accept proto=tcp dstports=443")), new RuleInsertion(RuleText.Parse("action=drop"))],
            DateTimeOffset.UnixEpoch);
        var plan = FirewallPlanner.AsPlan(change, PlanOperation.Add);
        Assert.Equal(
            "Add firewall rules to work:" +
            "\n  1. work: add 2 rule(s) of the Qubes firewall" +
            "\n       Add firewall rule as number 0: work: action=accept proto=tcp dstports=443-443" +
            "\n       Keep firewall rule (already present): work: action=drop",
            plan.Describe());
        Assert.Equal(
            "Add firewall rule as number 0: work: action=accept proto=tcp dstports=443-443\n" +
            "Keep firewall rule (already present): work: action=drop",
            plan.Steps[0].Detail);

        // A detail given in place of the rules' (Set-QubeFirewallRule's) is the one listed.
        var sb = new StringBuilder();
        DeploymentStep.AppendList(sb, [plan.Steps[0] with { Detail = "kept\nmoved" }]);
        Assert.Equal("\n  1. work: add 2 rule(s) of the Qubes firewall\n       kept\n       moved", sb.ToString());
        sb.Clear();
        DeploymentStep.AppendList(sb, [plan.Steps[0] with { Detail = null }]);
        Assert.Equal("\n  1. work: add 2 rule(s) of the Qubes firewall", sb.ToString());
    }
}
