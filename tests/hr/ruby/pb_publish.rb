# Publishes a protobuf EmployeeMessage like the Ruby platform (Active Publisher) does.
#
#   ruby pb_publish.rb AMQP_URL EXCHANGE GUID FIRST_NAME LAST_NAME
#
# Plain Bunny, persistent, publisher confirms, no CloudEvents headers; prints "CONFIRMED".
require "bunny"
require_relative "employee_message"

url, exchange_name, guid, first_name, last_name = ARGV
connection = Bunny.new(url, logger: Logger.new(nil))
connection.start
channel = connection.create_channel
channel.confirm_select
exchange = channel.topic(exchange_name, durable: true)
body = EmployeeMessage.encode(
  EmployeeMessage.new(guid: guid, first_name: first_name, last_name: last_name),
)
exchange.publish(
  body, routing_key: "employee.created", content_type: "application/protobuf", persistent: true,
)
raise "publish not confirmed" unless channel.wait_for_confirms

puts "CONFIRMED"
connection.close
